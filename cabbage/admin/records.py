"""The records the admin views show (filters, pages, counts, lock lines) and their JSON form.

Plain frozen data, no I/O: the ``cabbage`` command, the website, the REST API and ``/metrics``
all render these, and ``jsonable()`` gives the one JSON shape the CLI's ``--json`` and the API
share.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Sequence

from cabbage.exceptions import ConfigurationError
from cabbage.jobs import Job, Status

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


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
class JobPage:
    """One page of a listing; ``next_cursor`` is the ``before_id`` of the next page, None at the end."""

    jobs: list[Job]
    next_cursor: int | None


@dataclasses.dataclass(frozen=True)
class QueueCount:
    queue: str
    status: Status
    jobs: int


@dataclasses.dataclass(frozen=True)
class WaitingJob:
    """The oldest due ``todo`` job of a queue."""

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
