"""The exceptions cabbage raises: one root, a subclass per kind of problem.

A subclass's docstring is its help text. Where Python has a natural kind of error, the class
inherits it too, so callers can catch either (``except TypeError`` keeps working).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


class CabbageError(Exception):
    """Something cabbage cannot do; the message says what is wrong and what to do."""


class ConfigurationError(CabbageError, ValueError):
    """A setting has a value cabbage cannot use."""


class UnserialisableArgumentError(CabbageError, TypeError):
    """A task argument that JSON cannot carry was given to ``defer``; nothing was inserted."""


class ArgumentsTooLargeError(CabbageError, ValueError):
    """A job's arguments, as JSON text, are over its store's ``max_arguments_bytes``; nothing was
    inserted. Large data belongs in a table or an object store; pass its key instead."""


class ScheduleError(CabbageError, ValueError):
    """``schedule_at`` / ``schedule_in`` are missing a timezone, conflicting, use an unknown unit, or
    fall outside the times a job can be scheduled at (``cabbage.schedules``)."""


@dataclasses.dataclass(frozen=True)
class QueueingLockClash:
    """A job of a defer that its queueing lock refused, and why.

    ``position`` is its place in the defer, from 1 (1 for a single defer). It clashes either
    with ``waiting_job_id``, the ``todo`` job holding the key (None when that job was deferred
    by another transaction at the same moment, so its id is not known), or with the job at
    ``earlier_position`` of the same defer.
    """

    position: int
    queueing_lock: str
    waiting_job_id: int | None = None
    earlier_position: int | None = None


class AlreadyEnqueued(CabbageError):
    """A job with the same queueing lock is already waiting (``todo``): nothing was deferred.

    Plain ``CabbageError``: no built-in kind fits a key that is taken for now (it is not bad
    input, which ``ValueError`` catches, and deferring again later may succeed).

    ``clashes`` names each refused job of the defer (``QueueingLockClash``); ``queueing_lock``
    and ``job_id`` are the first one's key and waiting job (None when not known).

    >>> try:
    ...     refresh.configure(queueing_lock="user-42").defer(42)
    ... except cabbage.AlreadyEnqueued as refused:
    ...     print(refused.job_id)   # the job that will do it
    """

    def __init__(self, message: str, clashes: Sequence[QueueingLockClash] = ()) -> None:
        super().__init__(message)
        self.clashes = tuple(clashes)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.clashes)

    @property
    def queueing_lock(self) -> str | None:
        return self.clashes[0].queueing_lock if self.clashes else None

    @property
    def job_id(self) -> int | None:
        return self.clashes[0].waiting_job_id if self.clashes else None


class PeriodicScheduleError(ConfigurationError):
    """A periodic schedule cabbage cannot run: a bad cron expression, an unknown timezone, a task
    that needs arguments a tick cannot give, or a second schedule of a task under one
    periodic_id."""


class TaskNotFound(CabbageError, LookupError):
    """A job names a task that the running app does not declare."""


class TaskAlreadyRegistered(CabbageError, ValueError):
    """Two tasks were declared under the same name in one TaskManager."""


class StoreError(CabbageError):
    """The job store failed to carry out an operation."""


class DatabaseUnavailable(StoreError, ConnectionError):
    """PostgreSQL could not be reached or dropped the connection."""


class ConnectionSlotsExhausted(DatabaseUnavailable):
    """PostgreSQL refused a connection: every slot is taken (``max_connections``, less the slots
    reserved for superusers). Run fewer workers, put a pooler in session mode in front of the
    database, or raise ``max_connections``."""


class DatabaseBusy(StoreError):
    """A statement gave up waiting (``lock_timeout`` or ``statement_timeout``): the database is
    up, a lock or a long query held it back; the call can be tried again later."""


class SchemaError(StoreError):
    """The database schema is missing or older than this cabbage needs: run ``cabbage schema apply``."""


class JobNotFound(StoreError, LookupError):
    """No job has the given id."""


class JobStateError(StoreError):
    """The job is not in a state that allows the operation (e.g. cancelling a job that is running)."""


class AppImportError(CabbageError, ImportError):
    """The app named by ``--app`` could not be imported or is not a TaskManager."""
