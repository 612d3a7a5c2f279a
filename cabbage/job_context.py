"""The attempt a task runs in: its job, its task, and whether an operator asked to abort it.

``cabbage.current_job()`` gives a running task its ``JobContext``, in a worker's own thread, a
pool thread or the event loop alike (a context variable set around the task's call). A
middleware receives the same object.

An abort (``cabbage jobs abort ID``) reaches the worker's heartbeat thread, which sets the
attempt's ``AbortRequest``: a ``def`` task polls ``should_abort()`` and stops by raising (any
exception; ``cabbage.JobAborted`` says why); an ``async def`` task is cancelled
(``asyncio.CancelledError`` inside it). However such an attempt ends short of success, its job
ends ``cancelled`` and is not retried; one that returns normally succeeded, its work done.

>>> @task_manager.task(queue="imports")
... def import_file(path):
...     for chunk in read_chunks(path):
...         if cabbage.current_job().should_abort():
...             raise cabbage.JobAborted()
...         store(chunk)
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from typing import TYPE_CHECKING, Iterator

from cabbage.exceptions import CabbageError
from cabbage.jobs import Job

if TYPE_CHECKING:
    from cabbage.tasks import Task


class NoCurrentJob(CabbageError, LookupError):
    """``current_job()`` was called outside a task run by a worker."""


class JobAborted(Exception):
    """Raised by a task that stops because its abort was requested (``should_abort()``)."""

    def __init__(self, message: str = "the task stopped: its abort was requested") -> None:
        super().__init__(message)


class AbortRequest:
    """Whether an operator asked to abort one attempt, and who: set once, from any thread.

    A flag under one lock for all requests, not an Event each: every attempt has one, and
    almost none is ever set."""

    _setting = threading.Lock()

    def __init__(self) -> None:
        self._requested = False
        self._by: str | None = None

    def request(self, by: str | None) -> bool:
        """Records the request; False when it was already requested (nothing new to act on)."""
        with AbortRequest._setting:
            if self._requested:
                return False
            self._by = by
            self._requested = True
            return True

    @property
    def is_requested(self) -> bool:
        return self._requested

    @property
    def by(self) -> str | None:
        return self._by


@dataclasses.dataclass(frozen=True)
class JobContext:
    """The attempt a task runs (or a middleware wraps): its ``job`` (a ``cabbage.Job``), ``task``,
    and its abort request."""

    job: Job
    task: "Task"
    abort: AbortRequest = dataclasses.field(default_factory=AbortRequest, compare=False, repr=False)

    @property
    def attempt(self) -> int:
        """The attempt's number: 1 for the first, 2 for the first retry, ..."""
        return self.job.attempts

    def should_abort(self) -> bool:
        """Whether an operator asked to abort this job (``cabbage jobs abort``): the worker
        learns it within a second. Cheap: poll it as often as you like."""
        return self.abort.is_requested

    @property
    def aborted_by(self) -> str | None:
        """Who asked to abort the job, once someone did."""
        return self.abort.by


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("cabbage_current_job", default=None)


def current_job() -> JobContext:
    """The attempt the calling task runs; NoCurrentJob outside a task run by a worker."""
    context = _current.get()
    if context is None:
        raise NoCurrentJob("cabbage.current_job() is only known inside a task run by a worker")
    return context


@contextlib.contextmanager
def running(context: JobContext) -> Iterator[None]:
    """Makes ``context`` the current job for the duration of the block (one task's call)."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


__all__ = ["AbortRequest", "JobAborted", "JobContext", "NoCurrentJob", "current_job", "running"]
