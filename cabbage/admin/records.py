"""The records the admin views show (filters, pages, counts, lock lines) and their JSON form.

Plain frozen data, no I/O: the ``cabbage`` command, the website, the REST API and ``/metrics``
all render these, and ``jsonable()`` gives the one JSON shape the CLI's ``--json`` and the API
share.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Mapping, Sequence

from cabbage.exceptions import ConfigurationError
from cabbage.jobs import Attempt, Job, JobError, Status

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# A job's page and API answer cut its arguments (as JSON text), error message and traceback to
# this many characters each: nearly every real traceback fits, and a page stays light.
MAX_SHOWN_CHARS = 20_000
MAX_LISTED_ERROR_CHARS = 200  # the error message in a listing, one table cell
# Each kept attempt's error message and traceback, on a job's page and API answer: up to 20
# attempts are shown, so less than the last error's MAX_SHOWN_CHARS.
MAX_ATTEMPT_CHARS = 4_000


class JobState(str, enum.Enum):
    """What a job is doing, as the admin views show it: its status, with ``todo`` told apart.

    The values are the strings ``cabbage_job_state`` returns (migration 0007).
    """

    WAITING = "waiting"  # todo, due, at the head of its line: the next free worker takes it
    SCHEDULED = "scheduled"  # todo, not due yet
    BEHIND_LOCK = "behind_lock"  # todo, behind the head job of its lock's line
    DOING = "doing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


TODO_STATES = (JobState.WAITING, JobState.SCHEDULED, JobState.BEHIND_LOCK)


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing shows; None matches every value."""

    status: Status | None = None
    queue: str | None = None
    task_name: str | None = None
    lock: str | None = None

    def __post_init__(self) -> None:
        for field in ("queue", "task_name", "lock"):
            value = getattr(self, field)
            if value is not None and "\x00" in value:
                raise ConfigurationError(f"{field} filter {value!r} contains a NUL character, which no job can have")

    @classmethod
    def parse(cls, status: str | None, queue: str | None, task_name: str | None, lock: str | None) -> "JobFilter":
        """A filter from text (a form, a query string); empty text means no filter."""
        return cls(
            status=parse_status(status) if status else None,
            queue=queue or None,
            task_name=task_name or None,
            lock=lock or None,
        )


@dataclasses.dataclass(frozen=True)
class JobSummary:
    """A job as listings show it: no arguments and no traceback; ``last_error.message`` cut to
    MAX_LISTED_ERROR_CHARS, marked where it was. ``state`` tells todo jobs apart; for one
    behind its lock, ``waiting_behind_job_id`` is the head job of the line."""

    id: int
    queue: str
    task_name: str
    lock: str | None
    status: Status
    scheduled_at: datetime.datetime
    attempts: int
    max_attempts: int | None
    worker_id: int | None
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    last_error: JobError | None
    priority: int
    queueing_lock: str | None
    state: JobState
    waiting_behind_job_id: int | None
    abort_requested_at: datetime.datetime | None
    aborted_by: str | None

    @property
    def state_text(self) -> str:
        """The state in words: ``waiting behind job #12`` for a job behind its lock, ``doing,
        abort requested by alice`` for a running job an operator aborted."""
        if self.state is JobState.BEHIND_LOCK:
            return f"waiting behind job #{self.waiting_behind_job_id}"
        if self.status is Status.DOING and self.abort_requested_at is not None:
            return f"{self.state.value}, abort requested by {self.aborted_by or 'an operator'}"
        return self.state.value


@dataclasses.dataclass(frozen=True)
class JobDetail(JobSummary):
    """A job as its page shows it: error message and traceback cut to MAX_SHOWN_CHARS, marked.

    Arguments whose JSON text (``{"args": ..., "kwargs": ...}``) fits come whole in ``args``
    and ``kwargs``; longer ones leave both None and ``arguments_preview`` holds the first
    MAX_SHOWN_CHARS characters of that text, marked. ``attempt_history``: its kept attempts
    (``attempts`` counts them all), oldest first, their error messages and tracebacks cut to
    MAX_ATTEMPT_CHARS, marked.
    """

    args: tuple[Any, ...] | None
    kwargs: Mapping[str, Any] | None
    arguments_preview: str | None
    attempt_history: tuple[Attempt, ...] = ()


@dataclasses.dataclass(frozen=True)
class JobPage:
    """One page of a listing; ``next_cursor`` is the ``before_id`` of the next page, None at the end."""

    jobs: list[JobSummary]
    next_cursor: int | None


@dataclasses.dataclass(frozen=True)
class QueueCount:
    queue: str
    status: Status
    jobs: int


@dataclasses.dataclass(frozen=True)
class TodoCount:
    """How many todo jobs of a queue are in one of the todo states."""

    queue: str
    state: JobState
    jobs: int


@dataclasses.dataclass(frozen=True)
class WaitingJob:
    """The oldest waiting job of a queue: ``todo``, due, at the head of its line."""

    queue: str
    job_id: int
    waiting_s: float


@dataclasses.dataclass(frozen=True)
class MinuteThroughput:
    minute: datetime.datetime
    succeeded: int
    failed: int
    cancelled: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled


@dataclasses.dataclass(frozen=True)
class FinishedCount:
    task_name: str
    outcome: Status
    jobs: int


@dataclasses.dataclass(frozen=True)
class WorkerCounts:
    registered: int
    alive: int


@dataclasses.dataclass(frozen=True)
class LockLine:
    """A lock with a running job or jobs waiting behind it."""

    lock: str
    running_job_id: int | None
    waiting: int
    oldest_waiting_s: float | None


def parse_status(text: str) -> Status:
    try:
        return Status(text)
    except ValueError:
        known = ", ".join(status.value for status in Status)
        raise ConfigurationError(f"unknown status {text!r}: use one of {known}") from None


def marked_as_cut(shown: str | None, whole_chars: int | None) -> str | None:
    """``shown``, the start of a text of ``whole_chars`` characters, with a marker if it was cut."""
    if shown is None or whole_chars is None or whole_chars <= len(shown):
        return shown
    return f"{shown}… [cut: {whole_chars - len(shown):,} more characters, {whole_chars:,} in all]"


def summary_of(job: Job, state: JobState, waiting_behind_job_id: int | None) -> JobSummary:
    return JobSummary(**_summary_fields(job), state=state, waiting_behind_job_id=waiting_behind_job_id)


def detail_of(
    job: Job,
    arguments_preview: str | None,
    state: JobState,
    waiting_behind_job_id: int | None,
    attempt_history: Sequence[Attempt] = (),
) -> JobDetail:
    """The detail of ``job``; ``arguments_preview`` set means its arguments were cut."""
    whole = arguments_preview is None
    return JobDetail(
        **_summary_fields(job),
        state=state,
        waiting_behind_job_id=waiting_behind_job_id,
        args=job.args if whole else None,
        kwargs=job.kwargs if whole else None,
        arguments_preview=arguments_preview,
        attempt_history=tuple(attempt_history),
    )


_COMPUTED_FIELDS = ("state", "waiting_behind_job_id")  # from the query, not the Job


def _summary_fields(job: Job) -> dict[str, Any]:
    return {
        field.name: getattr(job, field.name)
        for field in dataclasses.fields(JobSummary)
        if field.name not in _COMPUTED_FIELDS
    }


def todo_counts_by_queue(counts: Sequence[TodoCount]) -> dict[str, dict[JobState, int]]:
    """{queue: {todo state: jobs}}, queues in name order, every todo state present."""
    table: dict[str, dict[JobState, int]] = {}
    for count in sorted(counts, key=lambda count: count.queue):
        table.setdefault(count.queue, dict.fromkeys(TODO_STATES, 0))[count.state] = count.jobs
    return table


def counts_by_queue(counts: Sequence[QueueCount]) -> dict[str, dict[Status, int]]:
    """{queue: {status: jobs}}, queues in name order, every status present (zeros included)."""
    table: dict[str, dict[Status, int]] = {}
    for count in sorted(counts, key=lambda count: count.queue):
        table.setdefault(count.queue, dict.fromkeys(Status, 0))[count.status] = count.jobs
    return table


def jsonable(value: Any) -> Any:
    """A record (or list, dict of them) as JSON-ready values: ISO 8601 times, status strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return value
