"""What a child tells its master through its report pipe: that it registered, each heartbeat the
database accepted, each job it starts and finishes, and each abort an operator asked of a job.

The master decides from these, on its own monotonic clock (the same clock as the child's: one
host), without asking the database: a child whose lease is about to end is killed before it
does, a job past its task's timeout (or its abort timeout) has its child killed at the deadline,
and the master reports its children as running as soon as they registered. One JSON object per
line, each written with one ``write(2)`` shorter than PIPE_BUF, so lines of the child's threads
never mix.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Union

# A task name is the user's text: bounded, so that a line stays one atomic write.
MAX_TASK_NAME_CHARS = 300


@dataclasses.dataclass(frozen=True)
class Registered:
    """The child's worker row exists; its registration counts as its first heartbeat."""

    worker_id: int
    sent_at: float


@dataclasses.dataclass(frozen=True)
class HeartbeatAccepted:
    """The database accepted a heartbeat sent at ``sent_at``."""

    sent_at: float


@dataclasses.dataclass(frozen=True)
class JobStarted:
    job_id: int
    task_name: str
    started_at: float
    timeout_s: float | None  # the task's timeout=, None when it has none


@dataclasses.dataclass(frozen=True)
class JobFinished:
    """The job's task returned or raised; its outcome may still be on its way to the database."""

    job_id: int


@dataclasses.dataclass(frozen=True)
class AbortRequested:
    """An operator asked to abort a running job, and the child told its task at ``requested_at``:
    the master kills the child if the task still runs after the abort timeout."""

    job_id: int
    requested_at: float
    aborted_by: str | None


@dataclasses.dataclass(frozen=True)
class JobsOverran:
    """Jobs whose def task, run in a thread, passed its timeout; the child exits next."""

    job_ids: list[int]


Report = Union[Registered, HeartbeatAccepted, JobStarted, JobFinished, AbortRequested, JobsOverran]
_KINDS: dict[str, type] = {
    kind.__name__: kind for kind in (Registered, HeartbeatAccepted, JobStarted, JobFinished, AbortRequested, JobsOverran)
}


def encode(report: Report) -> bytes:
    fields = dataclasses.asdict(report)
    if isinstance(report, JobStarted):
        fields["task_name"] = report.task_name[:MAX_TASK_NAME_CHARS]
    if isinstance(report, AbortRequested) and report.aborted_by is not None:
        fields["aborted_by"] = report.aborted_by[:MAX_TASK_NAME_CHARS]
    return (json.dumps({"kind": type(report).__name__, **fields}) + "\n").encode()


def decode(line: bytes) -> Report | None:
    """The report a line holds; None for a line that is not one (never from our own children)."""
    try:
        fields = json.loads(line)
        kind = _KINDS[fields.pop("kind")]
        return kind(**fields)  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError):
        return None


class ReportWriter:
    """The child's end: a report that cannot be written (the master gone) is dropped; the
    master-alive pipe tells the child about that."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, report: Report) -> None:
        try:
            os.write(self.fd, encode(report))
        except OSError:
            pass  # EPIPE: the master died; EAGAIN: it stopped reading. Either way, nothing to do.


class ReportReader:
    """The master's end of one child's pipe: non-blocking, whole lines only."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._partial = b""
        self.at_end = False  # the child's end is closed: nothing more will come

    def read(self) -> list[Report]:
        """Every whole report that arrived; [] when none (or the child's end is closed)."""
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break  # closed under us: the reap tells what happened
            if not chunk:
                self.at_end = True  # EOF: the child is gone, its exit is reaped
                break
            chunks.append(chunk)
        if not chunks:
            return []
        *lines, self._partial = (self._partial + b"".join(chunks)).split(b"\n")
        return [report for report in map(decode, lines) if report is not None]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
