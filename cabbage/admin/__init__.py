"""The operators' view of the jobs: listing, counting, retrying, cancelling and pruning them.

`Admin` runs the named queries of ``sql/admin.sql`` over one connection of its own; the
``cabbage`` command, the admin website, its REST API and ``/metrics`` all read and act through
it, so they agree.

    admin = Admin.connect(dsn)
    page = admin.list_jobs(JobFilter(status=Status.FAILED), limit=20)
    admin.retry_jobs([job.id for job in page.jobs])     # all or nothing

Retention is a store operation: ``cabbage.retention.prune_in_batches(store, older_than_s)``.
"""

from cabbage.admin.operations import Admin
from cabbage.admin.records import (
    DEFAULT_PAGE_SIZE,
    MAX_ATTEMPT_CHARS,
    MAX_LISTED_ERROR_CHARS,
    MAX_PAGE_SIZE,
    MAX_SHOWN_CHARS,
    FinishedCount,
    JobDetail,
    JobFilter,
    JobPage,
    JobState,
    JobSummary,
    LockLine,
    MinuteThroughput,
    QueueCount,
    TODO_STATES,
    TodoCount,
    WaitingJob,
    WorkerCounts,
    counts_by_queue,
    jsonable,
    parse_status,
    todo_counts_by_queue,
)
from cabbage.manual_changes import MAX_JOB_ID, RETRYABLE_STATUSES

__all__ = [
    "Admin",
    "RETRYABLE_STATUSES",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_JOB_ID",
    "MAX_SHOWN_CHARS",
    "MAX_LISTED_ERROR_CHARS",
    "MAX_ATTEMPT_CHARS",
    "JobFilter",
    "JobPage",
    "JobSummary",
    "JobDetail",
    "JobState",
    "TODO_STATES",
    "QueueCount",
    "TodoCount",
    "WaitingJob",
    "MinuteThroughput",
    "FinishedCount",
    "WorkerCounts",
    "LockLine",
    "counts_by_queue",
    "todo_counts_by_queue",
    "jsonable",
    "parse_status",
]
