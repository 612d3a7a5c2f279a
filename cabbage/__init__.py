"""cabbage: a PostgreSQL-backed task queue. These are its public names.

>>> import cabbage
>>> from cabbage import store
>>> task_manager = cabbage.TaskManager()
>>> @task_manager.task(queue="queue")
... def write_alphabet(floor): ...
>>> write_alphabet.defer("a")
>>> cabbage.Worker(task_manager).process_jobs()

Importing cabbage opens no connection and configures no logging.
"""

# The release; the distribution on PyPI is cabbage-queue (pyproject.toml reads this line).
__version__ = "0.2.0"

from cabbage import store
from cabbage.exceptions import (
    AlreadyEnqueued,
    AppImportError,
    ArgumentsTooLargeError,
    CabbageError,
    ConfigurationError,
    DatabaseUnavailable,
    JobNotFound,
    JobStateError,
    PeriodicScheduleError,
    ScheduleError,
    SchemaError,
    StoreError,
    TaskAlreadyRegistered,
    TaskNotFound,
    UnserialisableArgumentError,
)
from cabbage.jobs import Job, Status
from cabbage.manager import TaskManager
from cabbage.job_context import JobAborted, JobContext, NoCurrentJob, current_job
from cabbage.retry import RetryPolicy
from cabbage.tasks import Task
from cabbage.worker import Worker

__all__ = [
    "__version__",
    "TaskManager",
    "Worker",
    "Task",
    "RetryPolicy",
    "Status",
    "Job",
    "JobContext",
    "current_job",
    "JobAborted",
    "NoCurrentJob",
    "store",
    "AlreadyEnqueued",
    "AppImportError",
    "ArgumentsTooLargeError",
    "CabbageError",
    "ConfigurationError",
    "DatabaseUnavailable",
    "JobNotFound",
    "JobStateError",
    "PeriodicScheduleError",
    "ScheduleError",
    "SchemaError",
    "StoreError",
    "TaskAlreadyRegistered",
    "TaskNotFound",
    "UnserialisableArgumentError",
]
