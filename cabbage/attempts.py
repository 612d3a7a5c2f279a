"""One attempt of a job: its task and arguments resolved, the task called (a function, or a
coroutine function awaited under its ``timeout``), and what happened turned into an Outcome,
logged on one line inside the job's log context.

Worker threads and the event loop run attempts; the worker loop records their outcomes. A
task's exception is recorded whatever it is (``cabbage.task_errors``): a task that raises
KeyboardInterrupt or calls sys.exit() fails its job like any other error. The task runs as
``cabbage.current_job()``; an attempt whose abort was requested (``cabbage.job_context``) and
that ends short of success ends aborted: its job is cancelled, not retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import reprlib
import time
from typing import TYPE_CHECKING, Any, Mapping

import structlog

from cabbage.exceptions import TaskNotFound
from cabbage.job_context import AbortRequest, JobContext, running
from cabbage.jobs import Job, JobError, Outcome
from cabbage.middleware import run_with_middleware
from cabbage.task_errors import describe_exception

if TYPE_CHECKING:
    from cabbage.manager import TaskManager
    from cabbage.tasks import Task

log = structlog.get_logger()

# What a task may raise and still have its attempt recorded as failed.
TASK_EXCEPTIONS = (Exception, KeyboardInterrupt, SystemExit)


class UnrunnableJob(Exception):
    """A job this worker cannot run at all (unknown task, undecodable arguments)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error = JobError(error_type, message)


class TaskTimedOut(TimeoutError):
    """An ``async def`` task ran past its ``timeout=`` and was cancelled."""


@dataclasses.dataclass(frozen=True)
class Attempt:
    """An attempt that ended: its job, its outcome, and a KeyboardInterrupt the task raised
    (a worker run by hand raises it again once the outcome is recorded)."""

    job: Job
    outcome: Outcome
    interrupt: KeyboardInterrupt | None = None


def is_async(task_manager: "TaskManager", job: Job) -> bool:
    """Whether the job's task is an ``async def`` function (run on the event loop)."""
    task = task_manager.tasks.get(job.task_name)
    return task is not None and inspect.iscoroutinefunction(task.func)


def run_attempt(task_manager: "TaskManager", job: Job, context: Mapping[str, Any], abort: AbortRequest) -> Attempt:
    """Runs a job's ``def`` task here and now; ``context``: the log fields to bind (the worker's);
    ``abort``: the attempt's abort request, which the worker sets."""
    with structlog.contextvars.bound_contextvars(**context, **job.log_context()):
        started, resolved = _begin(task_manager, job)
        if isinstance(resolved, Attempt):
            return resolved
        task, args, kwargs = resolved
        job_context = JobContext(job, task, abort)
        try:
            with running(job_context):
                run_with_middleware(task_manager.middleware, job_context, args, kwargs)
        except TASK_EXCEPTIONS as exc:  # the boundary around the user's code
            return _failed(job, task, exc, started, abort)
        return _succeeded(job, started)


async def run_async_attempt(task_manager: "TaskManager", job: Job, context: Mapping[str, Any], abort: AbortRequest) -> Attempt:
    """Runs a job's ``async def`` task on the running event loop, cancelled at its timeout, or
    by the worker when its abort is requested (``LoopExecutor.cancel``)."""
    with structlog.contextvars.bound_contextvars(**context, **job.log_context()):
        started, resolved = _begin(task_manager, job)
        if isinstance(resolved, Attempt):
            return resolved
        task, args, kwargs = resolved
        job_context = JobContext(job, task, abort)
        try:
            with running(job_context):
                # wait_for cancels the task at the deadline: CancelledError is raised inside it.
                coroutine = run_with_middleware(task_manager.middleware, job_context, args, kwargs)
                await asyncio.wait_for(coroutine, timeout=task.timeout_s)
        except asyncio.TimeoutError:
            timed_out = TaskTimedOut(f"job {job.id} ({job.task_name}) timed out after {task.timeout_s:g} s and was cancelled")
            return _failed(job, task, timed_out, started, abort)
        except asyncio.CancelledError as exc:
            if not abort.is_requested:
                raise  # the loop is shutting down: not the task's outcome to record
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()  # the cancellation was ours, and it is over
            return _failed(job, task, exc, started, abort)
        except TASK_EXCEPTIONS as exc:  # the boundary; asyncio's loop must never see these
            return _failed(job, task, exc, started, abort)
        return _succeeded(job, started)


def _begin(task_manager: "TaskManager", job: Job) -> tuple[float, Attempt | tuple["Task", tuple[Any, ...], dict[str, Any]]]:
    """Logs the start; the task and arguments to call, or the failed Attempt of a job that
    cannot run at all."""
    log.info("job_started")
    started = time.perf_counter()
    try:
        return started, resolve(task_manager, job)
    except UnrunnableJob as exc:
        return started, _unrunnable(job, exc, started)


def resolve(task_manager: "TaskManager", job: Job) -> tuple["Task", tuple[Any, ...], dict[str, Any]]:
    try:
        task = task_manager.get_task(job.task_name)
    except TaskNotFound as exc:
        raise UnrunnableJob("TaskNotFound", str(exc)) from None
    args, kwargs = decode_arguments(job)
    return task, args, kwargs


def decode_arguments(job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A job's positional and keyword arguments; a JSON object stored in ``args`` is kwargs."""
    kwargs = job.kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(name, str) for name in kwargs):
        raise UnrunnableJob("UndecodableArguments", f"kwargs of job {job.id} must be a JSON object, got {reprlib.repr(kwargs)}")
    if isinstance(job.args, Mapping):
        if not all(isinstance(name, str) for name in job.args):
            raise UnrunnableJob("UndecodableArguments", f"args of job {job.id} has non-string keys: {reprlib.repr(job.args)}")
        return (), {**job.args, **kwargs}
    if isinstance(job.args, (list, tuple)):
        return tuple(job.args), dict(kwargs)
    raise UnrunnableJob("UndecodableArguments", f"args of job {job.id} must be a JSON array or object, got {reprlib.repr(job.args)}")


def _succeeded(job: Job, started: float) -> Attempt:
    log.info("job_succeeded", duration_ms=_ms_since(started))
    return Attempt(job, Outcome.succeeded())


def _unrunnable(job: Job, exc: UnrunnableJob, started: float) -> Attempt:
    log.error("job_failed", error_type=exc.error.type, error=exc.error.message, duration_ms=_ms_since(started))
    return Attempt(job, Outcome.failed(exc.error))


def _failed(job: Job, task: "Task", exc: BaseException, started: float, abort: AbortRequest) -> Attempt:
    error = describe_exception(exc)
    interrupt = exc if isinstance(exc, KeyboardInterrupt) else None
    if abort.is_requested:
        log.warning("job_aborted", aborted_by=abort.by, error_type=error.type, error=error.message,
                    duration_ms=_ms_since(started))  # fmt: skip
        return Attempt(job, Outcome.aborted(JobError.aborted(abort.by, error.traceback)), interrupt)
    policy = task.retry_policy
    if policy.max_attempts != job.max_attempts:
        # The job keeps the limit it was deferred with, as reclaim does.
        policy = dataclasses.replace(policy, max_attempts=job.max_attempts)
    retry_in_s = policy.retry_in_s(job.attempts, exc)
    fields = {"error_type": error.type, "error": error.message, "duration_ms": _ms_since(started), "exc_info": exc}
    if retry_in_s is None:
        log.error("job_failed", **fields)
        return Attempt(job, Outcome.failed(error), interrupt)
    log.warning("job_retry_scheduled", retry_in_s=retry_in_s, **fields)
    return Attempt(job, Outcome.retry(error, retry_in_s), interrupt)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
