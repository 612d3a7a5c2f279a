"""What a child tells its master through its report pipe: that it registered, each heartbeat the
database accepted, each job it starts and finishes, the jobs it holds started but has not begun
(a prefetch), and each abort an operator asked of a job.

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
import select
import threading
from typing import Any, Callable, Union

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
class JobsStarted:
    """Jobs a child began at once (the jobs of one claim, with several at once)."""

    jobs: list[JobStarted]


@dataclasses.dataclass(frozen=True)
class JobsFinished:
    """Jobs whose tasks returned together (their outcomes recorded in one round trip)."""

    job_ids: list[int]


@dataclasses.dataclass(frozen=True)
class JobsPrefetched:
    """Jobs the child holds started but has not begun (``--prefetch``): were it to die, they go
    back without using an attempt, unless a JobStarted for them came first."""

    job_ids: list[int]


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


Report = Union[
    Registered, HeartbeatAccepted, JobStarted, JobFinished, JobsStarted, JobsFinished, JobsPrefetched, AbortRequested,
    JobsOverran,
]
_KINDS: dict[str, type] = {
    kind.__name__: kind
    for kind in (Registered, HeartbeatAccepted, JobStarted, JobFinished, JobsStarted, JobsFinished, JobsPrefetched,
                 AbortRequested, JobsOverran)
}  # fmt: skip
# A line, its newline included, is one write(2) no longer than this: atomic on a pipe.
MAX_LINE_BYTES = select.PIPE_BUF


def encode(report: Report) -> bytes:
    """One line; a JobsStarted or JobsFinished too long for one atomic write is split in several
    lines (``encode_all``)."""
    fields = dict(vars(report))  # flat fields: no deep copy (dataclasses.asdict)
    if isinstance(report, JobStarted):
        fields["task_name"] = report.task_name[:MAX_TASK_NAME_CHARS]
    if isinstance(report, AbortRequested) and report.aborted_by is not None:
        fields["aborted_by"] = report.aborted_by[:MAX_TASK_NAME_CHARS]
    if isinstance(report, JobsStarted):
        fields["jobs"] = [[job.job_id, job.task_name[:MAX_TASK_NAME_CHARS], job.started_at, job.timeout_s] for job in report.jobs]
    return (json.dumps({"kind": type(report).__name__, **fields}) + "\n").encode()


def encode_all(gathered: list[Report]) -> list[bytes]:
    """The lines of reports gathered in order: each run of JobStarted (or of JobFinished) as
    JobsStarted (JobsFinished) lines, each within MAX_LINE_BYTES; the others one line each."""
    lines: list[bytes] = []
    index = 0
    while index < len(gathered):
        kind = type(gathered[index])
        end = index
        while end < len(gathered) and type(gathered[end]) is kind:
            end += 1
        run = gathered[index:end]
        if kind is JobStarted:
            lines += _within_a_line(run, lambda part: JobsStarted(part))  # type: ignore[arg-type]
        elif kind is JobFinished:
            lines += _within_a_line(run, lambda part: JobsFinished([job.job_id for job in part]))  # type: ignore[attr-defined]
        elif kind is JobsPrefetched:
            job_ids = [job_id for report in run for job_id in report.job_ids]  # type: ignore[attr-defined]
            lines += _within_a_line(job_ids, lambda part: JobsPrefetched(part))  # type: ignore[arg-type]
        else:
            lines += [encode(report) for report in run]
        index = end
    return lines


def _within_a_line(run: list[Any], grouped: Callable[[list[Any]], Report]) -> list[bytes]:
    line = encode(grouped(run))
    if len(line) <= MAX_LINE_BYTES or len(run) == 1:
        return [line]
    half = len(run) // 2
    return _within_a_line(run[:half], grouped) + _within_a_line(run[half:], grouped)


def decode(line: bytes) -> Report | None:
    """The report a line holds; None for a line that is not one (never from our own children)."""
    try:
        fields = json.loads(line)
        kind = _KINDS[fields.pop("kind")]
        if kind is JobsStarted:
            return JobsStarted([JobStarted(*job) for job in fields["jobs"]])
        return kind(**fields)  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError):
        return None


class ReportWriter:
    """The child's end: a report that cannot be written (the master gone) is dropped; the
    master-alive pipe tells the child about that.

    ``send`` writes at once. ``gather`` keeps a report until the next ``flush`` (or ``send``,
    which writes what was gathered first, so that the master learns of a job before an abort
    of it): a child running many jobs at once reports the starts of one claim, or the ends
    recorded together, as one line (JobsStarted, JobsFinished) in one write. Any thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()  # the worker loop's thread and the heartbeat's
        self._gathered: list[Report] = []

    def send(self, report: Report) -> None:
        with self._lock:
            self._write_lines([*encode_all(self._take_gathered()), encode(report)])

    def gather(self, report: Report) -> None:
        with self._lock:
            self._gathered.append(report)

    def flush(self) -> None:
        with self._lock:
            self._write_lines(encode_all(self._take_gathered()))

    def _take_gathered(self) -> list[Report]:
        gathered, self._gathered = self._gathered, []
        return gathered

    def _write_lines(self, lines: list[bytes]) -> None:
        """Whole lines in writes no longer than PIPE_BUF, each one atomic."""
        chunk = b""
        for line in lines:
            if chunk and len(chunk) + len(line) > MAX_LINE_BYTES:
                self._write(chunk)
                chunk = b""
            chunk += line
        if chunk:
            self._write(chunk)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
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
