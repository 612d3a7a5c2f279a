"""Jobs and their statuses: plain frozen data, no I/O."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Mapping


class Status(str, enum.Enum):
    """A job's status; the values are the strings stored in the database."""

    TODO = "todo"
    DOING = "doing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
# How an attempt may end: a finish, TODO for a retry, or CANCELLED when it was aborted.
OUTCOME_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.TODO, Status.CANCELLED})

# A job's priority is a PostgreSQL integer; higher runs first, 0 by default.
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
DEFAULT_PRIORITY = 0
# How many attempts of a job are kept (cabbage_attempts): the last ones; older ones are deleted.
KEPT_ATTEMPTS = 20


@dataclasses.dataclass(frozen=True)
class JobError:
    """What a failed attempt left behind: exception type, message and formatted traceback."""

    type: str
    message: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"

    @classmethod
    def worker_lost(cls, reason: str) -> "JobError":
        """What a reclaimed attempt records: its worker died, hung, or stopped holding it."""
        return cls(WORKER_LOST_ERROR_TYPE, f"worker lost: {reason}")

    @classmethod
    def superseded(cls, waiting_job_id: int) -> "JobError":
        """What a job records when it would have gone back to ``todo`` (a retry, a reclaim, a
        reserved job given back) while a newer job of its queueing lock waits: it ends
        cancelled, since the waiting job does the same work (``cabbage_superseded_error``)."""
        return cls(SUPERSEDED_ERROR_TYPE, f"not run again: job {waiting_job_id} with the same queueing lock is waiting")

    @classmethod
    def aborted(cls, aborted_by: str | None, traceback: str | None = None) -> "JobError":
        """What a job records when its attempt ended short of success after an operator asked to
        abort it (``cabbage_aborted_error``)."""
        return cls(ABORTED_ERROR_TYPE, f"aborted by {aborted_by or 'an operator'}", traceback)


# The error type of an attempt whose worker was lost (reclaimed by a supervisor or at unregister).
WORKER_LOST_ERROR_TYPE = "WorkerLost"
# The error type of a job a newer job of its queueing lock superseded (migration 0007).
SUPERSEDED_ERROR_TYPE = "Superseded"
# The error type of a job whose running attempt an operator aborted (migration 0009).
ABORTED_ERROR_TYPE = "Aborted"
# Why a worker that unregisters while it still holds a started job loses it.
UNREGISTERED_REASON = "worker unregistered while holding the job"


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A job about to be deferred, already validated by ``Task.defer``.

    ``scheduled_at`` is an aware datetime; ``schedule_in`` is a duration the store adds to
    *its own* clock (the database clock for PostgreSQL), as ``{"months": 1, "seconds": 5400.0}``:
    calendar units (years, months) stay separate, the rest is folded into seconds.
    At most one of the two is set; neither means "due now".
    ``priority``: higher is claimed first (a PostgreSQL integer). ``queueing_lock``: at most one
    ``todo`` job per queueing lock; a defer while one waits raises ``AlreadyEnqueued``.
    """

    queue: str
    task_name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    lock: str | None = None
    scheduled_at: datetime.datetime | None = None
    schedule_in: Mapping[str, float] | None = None
    max_attempts: int | None = 1  # None: retry without limit
    priority: int = DEFAULT_PRIORITY
    queueing_lock: str | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as stored: one row of ``cabbage_jobs``."""

    id: int
    queue: str
    task_name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    lock: str | None
    status: Status
    scheduled_at: datetime.datetime
    attempts: int
    max_attempts: int | None
    worker_id: int | None
    created_at: datetime.datetime
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    last_error: JobError | None = None
    priority: int = DEFAULT_PRIORITY
    queueing_lock: str | None = None
    # An operator's request to abort the job (cabbage jobs abort): when, and who asked.
    abort_requested_at: datetime.datetime | None = None
    aborted_by: str | None = None

    @property
    def is_started(self) -> bool:
        """A claimed job is started once its attempt began (a reserved job is not)."""
        return self.status is Status.DOING and self.started_at is not None

    def log_context(self) -> dict[str, Any]:
        """The fields every log line about this job carries."""
        return {
            "job_id": self.id,
            "task_name": self.task_name,
            "queue": self.queue,
            "lock": self.lock,
            "attempt": self.attempts,
        }


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the worker reports it to the store.

    ``status`` is SUCCEEDED, FAILED, TODO for a retry that becomes due ``retry_in_s``
    seconds from now on the store's clock, or CANCELLED for an attempt that ended after its
    abort was requested. The store also ends as cancelled a failed or retried attempt whose
    abort was requested meanwhile: the request is the store's, not the worker's.
    """

    status: Status
    error: JobError | None = None
    retry_in_s: float | None = None

    def __post_init__(self) -> None:
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(f"an attempt ends succeeded, failed, todo (retry) or cancelled (aborted), got {self.status}")

    @classmethod
    def succeeded(cls) -> "Outcome":
        return cls(Status.SUCCEEDED)

    @classmethod
    def failed(cls, error: JobError) -> "Outcome":
        return cls(Status.FAILED, error)

    @classmethod
    def retry(cls, error: JobError, retry_in_s: float) -> "Outcome":
        return cls(Status.TODO, error, retry_in_s)

    @classmethod
    def aborted(cls, error: JobError) -> "Outcome":
        return cls(Status.CANCELLED, error)


class AttemptOutcome(str, enum.Enum):
    """How an attempt ended; the values are the strings stored in ``cabbage_attempts``."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # and no retry followed
    RETRIED = "retried"  # failed, and a retry was scheduled
    LOST = "lost"  # reclaimed: its worker died, hung, or stopped holding it
    ABORTED = "aborted"  # ended short of success after an operator asked to abort it

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt of a job, as kept in its history (the last ``KEPT_ATTEMPTS``)."""

    job_id: int
    attempt: int  # its number: 1 for the first
    worker_id: int | None
    started_at: datetime.datetime
    finished_at: datetime.datetime
    outcome: AttemptOutcome
    error: JobError | None = None


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """A registered worker and what it is doing, as seen on the store's clock."""

    worker_id: int
    hostname: str
    pid: int
    started_at: datetime.datetime
    last_heartbeat_at: datetime.datetime
    heartbeat_age_s: float
    current_job_id: int | None = None
    current_task_name: str | None = None
    current_job_run_s: float | None = None  # seconds since the current attempt started


@dataclasses.dataclass(frozen=True)
class ReclaimedJob:
    """A job taken back from a lost worker, and where it went."""

    job_id: int
    task_name: str
    queue: str
    lock: str | None
    worker_id: int
    attempts: int
    status: Status  # TODO (retry, or never started), FAILED, or CANCELLED (superseded, aborted)
    was_started: bool


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """How many sessions the database server allows, and how many it holds now."""

    max_connections: int
    reserved_connections: int  # kept for superusers (and pg_use_reserved_connections)
    in_use: int  # client sessions, of every database of the server

    def __str__(self) -> str:
        return (
            f"max_connections={self.max_connections}, {self.reserved_connections} reserved for superusers, "
            f"{self.in_use} in use"
        )
