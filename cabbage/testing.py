"""InMemoryJobStore: the JobStore contract kept in process, for tests and single-process runs.

It behaves like the PostgreSQL store (same statuses, lock lines, ordering, scheduling, retries,
fencing, workers and reclaim), so code tested against it runs the same way in production:

    task_manager = cabbage.TaskManager(
        store_class=store.load_store_from_path("cabbage.testing.InMemoryJobStore")
    )
    write_alphabet.defer("a")
    cabbage.Worker(task_manager).process_jobs()   # runs every job due now, then returns

Read it to understand the semantics: each rule of the schema's triggers is a method here.
Its clock is ``time.time()`` in UTC (PostgreSQL uses the database clock), or a ``ManualClock``
that tests move forward instead of sleeping. One condition
variable guards everything, so worker threads may share one store (``open_sibling`` returns it).
Arguments are kept as JSON text and come back as jsonb returns them (tuples as lists, object
keys in jsonb's order, 1e20 as an int); what a job cannot carry (``cabbage.new_jobs``) is
refused at defer.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import json
import os
import threading
import time
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from cabbage import new_jobs, queueing_locks, schedules
from cabbage.exceptions import ConfigurationError
from cabbage.manual_changes import (
    AbortResult,
    check_aborted_by,
    refuse_ineligible,
    refuse_taken_queueing_locks,
    wanted_job_ids,
)
from cabbage.jobs import (
    KEPT_ATTEMPTS,
    Attempt,
    AttemptOutcome,
    Job,
    JobError,
    NewJob,
    Outcome,
    ReclaimedJob,
    Status,
    WorkerInfo,
)
from cabbage.periodic import (
    DeclaredSchedule,
    PeriodicOverview,
    PeriodicSchedule,
    PeriodicTick,
    RecordedTick,
    RefusedTick,
    defer_tick_jobs,
)
from cabbage.notifications import WakePipe
from cabbage.store import AbortNotices, JobStore

JOB_FIELDS = frozenset(field.name for field in dataclasses.fields(Job))


def system_clock() -> datetime.datetime:
    """Now, in UTC: the in-memory store's default clock."""
    return datetime.datetime.fromtimestamp(time.time(), datetime.timezone.utc)


class ManualClock:
    """A clock that moves only when told, for tests that let time pass without sleeping.

    >>> clock = ManualClock()
    >>> store = InMemoryJobStore(clock=clock)
    >>> clock.advance(30)        # heartbeats are 30 s older, a job due in 30 s is due now
    """

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self.now = system_clock() if start is None else start

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@dataclasses.dataclass
class _StoredJob:
    """One row of the jobs table. Arguments are JSON text, as PostgreSQL stores them."""

    id: int
    queue: str
    task_name: str
    args_json: str
    kwargs_json: str
    lock: str | None
    status: Status
    # Only the head of a lock's line (and every unlocked job) is claimable: see _set_status.
    is_head: bool
    scheduled_at: datetime.datetime
    attempts: int
    max_attempts: int | None
    worker_id: int | None
    created_at: datetime.datetime
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    last_error: JobError | None = None
    priority: int = 0
    queueing_lock: str | None = None
    abort_requested_at: datetime.datetime | None = None
    aborted_by: str | None = None

    def to_job(self) -> Job:
        """The row as a ``Job``, its arguments decoded from JSON as PostgreSQL returns them."""
        columns = {name: getattr(self, name) for name in JOB_FIELDS if hasattr(self, name)}
        return Job(args=tuple(_decode_arguments(self.args_json)), kwargs=_decode_arguments(self.kwargs_json), **columns)

    def is_claimable(self, queues: Sequence[str] | None, now: datetime.datetime) -> bool:
        return self.is_claimable_once_due(queues) and self.scheduled_at <= now

    def is_claimable_once_due(self, queues: Sequence[str] | None) -> bool:
        """``todo`` at the head of its lock's line, in one of ``queues`` (None: any)."""
        return self.status is Status.TODO and self.is_head and (queues is None or self.queue in queues)

    def is_reserved_by(self, worker_id: int) -> bool:
        return self.status is Status.DOING and self.worker_id == worker_id and self.started_at is None

    def is_started_by(self, worker_id: int) -> bool:
        return self.status is Status.DOING and self.worker_id == worker_id and self.started_at is not None

    def may_retry(self) -> bool:
        return self.max_attempts is None or self.attempts < self.max_attempts

    def claim_order(self) -> tuple[int, datetime.datetime, int]:
        """Highest priority first, then by scheduled_at, then in creation order."""
        return -self.priority, self.scheduled_at, self.id


@dataclasses.dataclass
class _StoredWorker:
    worker_id: int
    hostname: str
    pid: int
    queues: tuple[str, ...] | None
    started_at: datetime.datetime
    last_heartbeat_at: datetime.datetime


class _InMemoryAbortNotices(AbortNotices):
    """What LISTEN cabbage_aborts gives a heartbeat, in process: a pipe ``abort_jobs`` writes to."""

    def __init__(self, store: "InMemoryJobStore", worker_id: int) -> None:
        self.store = store
        self.worker_id = worker_id
        self.wake_pipe = WakePipe()

    def fileno(self) -> int:
        return self.wake_pipe.reader

    def take(self) -> bool:
        try:
            woken = bool(os.read(self.wake_pipe.reader, 4096))
        except BlockingIOError:
            return False
        self.wake_pipe.drain()
        return woken

    def close(self) -> None:
        self.store._unwatch_aborts(self)
        self.wake_pipe.close()


class InMemoryJobStore(JobStore):
    """The JobStore contract in process: fast tests without PostgreSQL.

    >>> store = InMemoryJobStore()
    >>> job_id = store.defer_job(NewJob(queue="queue", task_name="write_alphabet", args=("a",)))
    >>> [job.status for job in store.jobs]
    [<Status.TODO: 'todo'>]

    Besides the contract it offers ``jobs`` (every job, newest last) and ``reset()`` for tests,
    and the operator's ``retry_jobs`` and ``cancel_jobs`` of ``cabbage.admin.Admin``.
    It cannot join a database transaction: ``connection`` must be None.
    ``max_arguments_bytes``: see ``JobStore``.
    """

    def __init__(
        self,
        clock: Callable[[], datetime.datetime] = system_clock,
        *,
        max_arguments_bytes: int = new_jobs.DEFAULT_MAX_ARGUMENTS_BYTES,
    ) -> None:
        self._clock = clock
        self.max_arguments_bytes = new_jobs.check_max_arguments_bytes(max_arguments_bytes)
        self._condition = threading.Condition()
        self.reset()

    # -- test helpers ----------------------------------------------------------------------------

    @property
    def jobs(self) -> tuple[Job, ...]:
        """Every job as a ``Job`` record, in creation order (newest last); a snapshot."""
        with self._condition:
            return tuple(row.to_job() for row in self._jobs.values())

    def reset(self) -> None:
        """Forgets every job and worker, as a fresh store; ids start again from 1."""
        with self._condition:
            self._jobs: dict[int, _StoredJob] = {}
            # Each job's attempts that ended, oldest first: the last KEPT_ATTEMPTS
            # (cabbage_attempts).
            self._attempts: dict[int, list[Attempt]] = {}
            self._workers: dict[int, _StoredWorker] = {}
            self._last_job_id = 0
            self._last_worker_id = 0
            # Wake-ups of wait_for_jobs: a count per queue, and interrupt_wait's count.
            self._wakeups: collections.Counter[str] = collections.Counter()
            self._interrupts = 0
            self._interrupt_pending = False
            # Periodic schedules: (task name, periodic id) -> (schedule, first and last declared
            # at), and each one's recorded ticks by tick time.
            self._schedules: dict[tuple[str, str], tuple[PeriodicSchedule, datetime.datetime, datetime.datetime]] = {}
            self._ticks: dict[tuple[str, str], dict[datetime.datetime, RecordedTick]] = {}
            # The heartbeats waiting for abort notifications, by worker id (NOTIFY cabbage_aborts).
            self._abort_watches: dict[int, list[_InMemoryAbortNotices]] = {}

    # -- what an operator does (``cabbage jobs retry|cancel``), as ``cabbage.admin.Admin`` -------

    def retry_jobs(self, job_ids: Sequence[int]) -> list[int]:
        """Sends failed or cancelled jobs back to ``todo``, due now, attempts kept.

        A re-queued job takes the place its id gives it in its lock's line: behind the current
        head, if the line has one. All or nothing, as ``Admin.retry_jobs``; refused, too, when
        it would make a second ``todo`` job of a queueing lock.
        """
        with self._condition:
            rows = self._rows_to_change("retry", job_ids)
            wanted_locks = {row.id: row.queueing_lock for row in rows if row.queueing_lock is not None}
            waiting = {key: self._waiting_job_with(key) for key in set(wanted_locks.values())}
            refuse_taken_queueing_locks(wanted_locks, {key: job_id for key, job_id in waiting.items() if job_id})
            now = self._clock()
            for row in rows:
                row.scheduled_at, row.worker_id, row.started_at, row.finished_at = now, None, None, None
                row.abort_requested_at, row.aborted_by = None, None
                self._set_status(row, Status.TODO)
            self._wake_queues(row.queue for row in rows if row.is_head)
            return [row.id for row in rows]

    def cancel_jobs(self, job_ids: Sequence[int]) -> list[int]:
        """Cancels waiting (``todo``) jobs; a cancelled head frees its line. All or nothing."""
        with self._condition:
            rows = self._rows_to_change("cancel", job_ids)
            now = self._clock()
            for row in rows:
                row.finished_at = now
                self._set_status(row, Status.CANCELLED)
            return [row.id for row in rows]

    def abort_jobs(self, job_ids: Sequence[int], aborted_by: str) -> AbortResult:
        """Aborts jobs, as ``Admin.abort_jobs``: a todo or only reserved one is cancelled now; a
        running one's worker is notified. All or nothing."""
        aborted_by = check_aborted_by(aborted_by)
        with self._condition:
            rows = self._rows_to_change("abort", job_ids)
            now = self._clock()
            cancelled, requested = [], []
            for row in rows:
                if row.abort_requested_at is None:
                    row.abort_requested_at, row.aborted_by = now, aborted_by
                if row.status is Status.DOING and row.started_at is not None:
                    requested.append(row.id)
                    for notices in self._abort_watches.get(row.worker_id, ()):
                        notices.wake_pipe.wake()
                else:
                    row.worker_id, row.finished_at = None, now
                    self._set_status(row, Status.CANCELLED)
                    cancelled.append(row.id)
            return AbortResult(cancelled, requested)

    def _rows_to_change(self, verb: str, job_ids: Sequence[int]) -> list[_StoredJob]:
        """The jobs to change, or the error naming every one that cannot take the change."""
        wanted = wanted_job_ids(verb, job_ids)
        refuse_ineligible(verb, wanted, {job_id: self._jobs[job_id].status for job_id in wanted if job_id in self._jobs})
        return [self._jobs[job_id] for job_id in wanted]

    # -- deferring -------------------------------------------------------------------------------

    def defer_jobs(self, jobs: Sequence[NewJob], connection: Any = None) -> list[int]:
        if connection is not None:
            raise ConfigurationError(
                "the in-memory store cannot join a database transaction; "
                "defer without connection=, or use cabbage.postgres.PostgresJobStore"
            )
        with self._condition:
            rows = self._rows_of(jobs, self._clock())
            clashes = queueing_locks.find_clashes([job.queueing_lock for job in jobs], self._waiting_job_with)
            if clashes:
                queueing_locks.refuse(clashes)
            for row in rows:
                self._insert(row)
            self._wake_queues(row.queue for row in rows if row.is_head)
            return [row.id for row in rows]

    def _rows_of(self, jobs: Sequence[NewJob], now: datetime.datetime) -> list[_StoredJob]:
        """The rows the jobs become, every one built first, so that one job the store cannot
        keep inserts none."""
        new_jobs.check_job_texts(jobs)
        new_jobs.check_options(jobs)
        return [_new_row(job, now, self.max_arguments_bytes) for job in jobs]

    async def defer_job_async(self, job: NewJob) -> int:
        return self.defer_job(job)  # in memory, no I/O: nothing for the loop to wait for

    async def defer_calls_async(self, job: NewJob, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]]) -> list[int]:
        return self.defer_calls(job, calls)

    def _insert(self, row: _StoredJob) -> None:
        self._last_job_id += 1
        row.id = self._last_job_id  # ids give the order of each lock's line
        row.is_head = self._line_is_empty(row.lock)
        self._jobs[row.id] = row

    # -- queueing locks: the unique index, and who gives way ----------------------------------

    def _waiting_job_with(self, queueing_lock: str) -> int | None:
        """The todo job holding a queueing lock (at most one:
        cabbage_jobs_one_todo_per_queueing_lock)."""
        return next(
            (row.id for row in self._jobs.values() if row.status is Status.TODO and row.queueing_lock == queueing_lock),
            None,
        )

    def _superseders(self, returning: Sequence[_StoredJob]) -> dict[int, int]:
        """Of jobs about to go back to todo together, those that a newer job of their queueing
        lock supersedes, and by which: the todo job holding the key, else the newest of them."""
        newest: dict[str, int] = {}
        for row in returning:
            if row.queueing_lock is not None:
                newest[row.queueing_lock] = max(newest.get(row.queueing_lock, 0), row.id)
        superseded = {}
        for row in returning:
            if row.queueing_lock is None:
                continue
            waiting = self._waiting_job_with(row.queueing_lock)
            by = waiting if waiting is not None else newest[row.queueing_lock]
            if by != row.id:
                superseded[row.id] = by
        return superseded

    def _supersede(self, row: _StoredJob, by: int) -> None:
        """A job that would go back to todo while job ``by`` holds its queueing lock ends."""
        row.finished_at = self._clock()
        row.last_error = JobError.superseded(by)
        self._set_status(row, Status.CANCELLED)

    # -- attempts: cabbage_attempts --------------------------------------------------------------

    def _record_attempt(
        self, row: _StoredJob, worker_id: int, outcome: AttemptOutcome, error: JobError | None
    ) -> None:
        assert row.started_at is not None, "only a started attempt ends"
        kept = [attempt for attempt in self._attempts.get(row.id, []) if attempt.attempt > row.attempts - KEPT_ATTEMPTS]
        kept.append(Attempt(row.id, row.attempts, worker_id, row.started_at, self._clock(), outcome, error))
        self._attempts[row.id] = kept

    # -- lock lines: the schema's triggers, one method each ------------------------------------

    def _line_is_empty(self, lock: str | None) -> bool:
        """A new job heads its line only when no other job does (unlocked jobs always do)."""
        return lock is None or not any(row.lock == lock and row.is_head for row in self._jobs.values())

    def _set_status(self, row: _StoredJob, status: Status) -> None:
        """Changes a job's status and keeps its lock's line in order, like the triggers do."""
        if row.status is status:
            return
        was_head, old_status = row.is_head, row.status
        row.status = status
        if status.is_finished:
            row.is_head = False  # it leaves the line
        elif row.lock is None:
            row.is_head = True
        # A todo/doing job with a lock keeps is_head: a retried head keeps its place.
        left_as_head = was_head and not row.is_head
        came_back = status is Status.TODO and not row.is_head and old_status.is_finished
        if row.lock is not None and (left_as_head or came_back):
            self._promote_next_head(row.lock)

    def _promote_next_head(self, lock: str) -> None:
        """When a line has no head, its oldest waiting job becomes the head; a job re-queued
        by hand therefore waits behind the current head, if there is one."""
        line = [row for row in self._jobs.values() if row.lock == lock]
        if any(row.is_head for row in line):
            return
        waiting = [row for row in line if row.status is Status.TODO]
        if waiting:
            next_head = min(waiting, key=lambda row: row.id)
            next_head.is_head = True
            self._wake_queues([next_head.queue])

    # -- claiming and finishing ------------------------------------------------------------------

    def claim_jobs(self, worker_id: int, queues: Sequence[str] | None, limit: int = 1, *, start_all: bool = False) -> list[Job]:
        with self._condition:
            now = self._clock()
            due = sorted(
                (row for row in self._jobs.values() if row.is_claimable(queues, now)), key=_StoredJob.claim_order
            )[: max(limit, 0)]
            for position, row in enumerate(due):
                row.status = Status.DOING  # a head stays head: no line change
                row.worker_id = worker_id
                row.started_at = None
                if position == 0 or start_all:
                    self._start(row, now)  # the rest are only reserved, unless all start
            return [row.to_job() for row in due]

    def _start(self, row: _StoredJob, now: datetime.datetime) -> None:
        row.attempts += 1
        row.started_at = now

    def start_job(self, job_id: int, worker_id: int) -> Job | None:
        with self._condition:
            row = self._jobs.get(job_id)
            if row is None or not row.is_reserved_by(worker_id):
                return None
            self._start(row, self._clock())
            return row.to_job()

    def finish_job(self, job_id: int, worker_id: int, attempt: int, outcome: Outcome) -> bool:
        with self._condition:
            row = self._jobs.get(job_id)
            # The fence of invariant 5: only the worker running this very attempt may finish it.
            if row is None or not row.is_started_by(worker_id) or row.attempts != attempt:
                return False
            now = self._clock()
            if outcome.status is not Status.SUCCEEDED and row.abort_requested_at is not None:
                # The request is the store's: however the attempt failed, it was aborted.
                traceback = outcome.error.traceback if outcome.error else None
                outcome = Outcome.aborted(JobError.aborted(row.aborted_by, traceback))
            superseded_by = None
            if outcome.status is Status.TODO and row.queueing_lock is not None:
                superseded_by = self._waiting_job_with(row.queueing_lock)
            if outcome.status is Status.CANCELLED:
                attempt_outcome = AttemptOutcome.ABORTED
            elif outcome.status is not Status.TODO:
                attempt_outcome = AttemptOutcome(outcome.status.value)
            else:  # a retry, unless superseded: then the attempt's failure was its last
                attempt_outcome = AttemptOutcome.RETRIED if superseded_by is None else AttemptOutcome.FAILED
            self._record_attempt(row, worker_id, attempt_outcome, outcome.error)
            if outcome.error is not None:
                row.last_error = outcome.error
            if superseded_by is not None:
                # It keeps its worker_id, as a finished job does.
                self._supersede(row, superseded_by)
            elif outcome.status is Status.TODO:
                row.worker_id = None
                row.scheduled_at = now + datetime.timedelta(seconds=outcome.retry_in_s or 0.0)
                self._set_status(row, outcome.status)
                if row.is_head:  # idle workers wait no longer than their next due job: this one
                    self._wake_queues([row.queue])
            else:
                row.finished_at = now
                self._set_status(row, outcome.status)
            return True

    def finish_and_start(
        self, job_id: int, worker_id: int, attempt: int, outcome: Outcome, next_job_id: int | None
    ) -> tuple[bool, Job | None]:
        with self._condition:  # both steps at once, as PostgreSQL does in one round trip
            return super().finish_and_start(job_id, worker_id, attempt, outcome, next_job_id)

    def finish_and_claim(
        self, job_id: int, worker_id: int, attempt: int, outcome: Outcome, queues: Sequence[str] | None, limit: int
    ) -> tuple[bool, list[Job]]:
        with self._condition:  # both steps at once, as PostgreSQL does in one round trip
            return super().finish_and_claim(job_id, worker_id, attempt, outcome, queues, limit)

    def finish_jobs_and_claim(
        self, worker_id: int, finishes: Sequence[tuple[int, int, Outcome]], queues: Sequence[str] | None, limit: int
    ) -> tuple[set[int], list[Job]]:
        with self._condition:  # all at once, as PostgreSQL does in one round trip
            return super().finish_jobs_and_claim(worker_id, finishes, queues, limit)

    def held_jobs(self, worker_id: int) -> list[Job]:
        with self._condition:
            held = [row for row in self._jobs.values() if row.status is Status.DOING and row.worker_id == worker_id]
            return [row.to_job() for row in sorted(held, key=_StoredJob.claim_order)]

    def release_jobs(self, job_ids: Sequence[int], worker_id: int) -> int:
        with self._condition:
            released = [
                row for row in map(self._jobs.get, job_ids) if row is not None and row.is_reserved_by(worker_id)
            ]
            superseded = self._superseders(released)
            for row in released:
                if row.id in superseded:
                    row.worker_id = None
                    self._supersede(row, superseded[row.id])
                else:
                    self._put_back(row)
            return len(released)

    def unstart_jobs(self, job_ids: Sequence[int], worker_id: int) -> int:
        with self._condition:
            started = [row for row in map(self._jobs.get, job_ids) if row is not None and row.is_started_by(worker_id)]
            for row in started:
                row.attempts -= 1
                row.started_at = None
            return len(started)

    def _put_back(self, row: _StoredJob) -> None:
        """A job claimed but not started goes back to todo as it was: no attempt used."""
        row.worker_id = None
        self._set_status(row, Status.TODO)
        self._wake_queues([row.queue])

    # -- waiting ---------------------------------------------------------------------------------

    def seconds_until_next_due(self, queues: Sequence[str] | None) -> float | None:
        with self._condition:
            now = self._clock()
            due_at = [row.scheduled_at for row in self._jobs.values() if row.is_claimable_once_due(queues)]
            return max((min(due_at) - now).total_seconds(), 0.0) if due_at else None

    def wait_for_jobs(self, queues: Sequence[str] | None, timeout_s: float) -> bool:
        with self._condition:
            wakeups_before = self._count_wakeups(queues)
            interrupts_before = self._interrupts

            def may_have_jobs() -> bool:
                # PostgreSQL keeps the notifications that arrived before the wait; a job
                # already due stands in for them here, so no wake-up is ever lost.
                return self._count_wakeups(queues) != wakeups_before or any(
                    row.is_claimable(queues, self._clock()) for row in self._jobs.values()
                )

            def is_interrupted() -> bool:
                return self._interrupt_pending or self._interrupts != interrupts_before

            self._condition.wait_for(lambda: may_have_jobs() or is_interrupted(), timeout=max(timeout_s, 0.0))
            if may_have_jobs():
                return True
            self._interrupt_pending = False  # an interrupt ends the wait as a timeout does
            return False

    def interrupt_wait(self) -> None:
        with self._condition:
            self._interrupts += 1
            # Kept until the next wait when no wait is in progress, like a self-pipe would.
            self._interrupt_pending = True
            self._condition.notify_all()

    def _count_wakeups(self, queues: Sequence[str] | None) -> int:
        if queues is None:
            return sum(self._wakeups.values())
        return sum(self._wakeups[queue] for queue in queues)

    def _wake_queues(self, queues: Iterable[str]) -> None:
        """What NOTIFY cabbage_jobs does for PostgreSQL: wakes the idle workers of these queues."""
        self._wakeups.update(set(queues))
        self._condition.notify_all()

    # -- workers and heartbeats ------------------------------------------------------------------

    def register_worker(self, hostname: str, pid: int, queues: Sequence[str] | None) -> int:
        with self._condition:
            now = self._clock()
            self._last_worker_id += 1
            self._workers[self._last_worker_id] = _StoredWorker(
                worker_id=self._last_worker_id,
                hostname=hostname,
                pid=pid,
                queues=None if queues is None else tuple(queues),
                started_at=now,
                last_heartbeat_at=now,
            )
            return self._last_worker_id

    def record_heartbeat(self, worker_id: int) -> bool:
        with self._condition:
            worker = self._workers.get(worker_id)
            if worker is None:
                return False
            worker.last_heartbeat_at = self._clock()
            return True

    def abort_requests_of(self, worker_id: int) -> dict[int, str | None]:
        with self._condition:
            return {
                row.id: row.aborted_by
                for row in sorted(self._jobs.values(), key=lambda row: row.id)
                if row.is_started_by(worker_id) and row.abort_requested_at is not None
            }

    def watch_aborts(self, worker_id: int) -> AbortNotices:
        with self._condition:
            notices = _InMemoryAbortNotices(self, worker_id)
            self._abort_watches.setdefault(worker_id, []).append(notices)
            return notices

    def _unwatch_aborts(self, notices: "_InMemoryAbortNotices") -> None:
        with self._condition:
            watches = self._abort_watches.get(notices.worker_id, [])
            if notices in watches:
                watches.remove(notices)
            if not watches:
                self._abort_watches.pop(notices.worker_id, None)

    def list_workers(self) -> list[WorkerInfo]:
        with self._condition:
            now = self._clock()
            return [self._describe_worker(worker, now) for worker in sorted(self._workers.values(), key=_by_id)]

    def _describe_worker(self, worker: _StoredWorker, now: datetime.datetime) -> WorkerInfo:
        # A job it only reserved is not its current job.
        started = [row for row in self._jobs.values() if row.is_started_by(worker.worker_id)]
        current = max(started, key=_started_at) if started else None
        return WorkerInfo(
            worker_id=worker.worker_id,
            hostname=worker.hostname,
            pid=worker.pid,
            started_at=worker.started_at,
            last_heartbeat_at=worker.last_heartbeat_at,
            heartbeat_age_s=(now - worker.last_heartbeat_at).total_seconds(),
            current_job_id=current.id if current else None,
            current_task_name=current.task_name if current else None,
            current_job_run_s=_seconds_between(current.started_at, now) if current else None,
        )

    def reclaim_jobs_of(self, worker_ids: Sequence[int], reason: str) -> list[ReclaimedJob]:
        with self._condition:
            lost = set(worker_ids)
            for worker_id in lost:
                self._workers.pop(worker_id, None)
            held = [row for row in self._jobs.values() if row.status is Status.DOING and row.worker_id in lost]
            going_back = [row for row in held if row.started_at is None or (row.may_retry() and row.abort_requested_at is None)]
            superseded = self._superseders(going_back)
            return [self._reclaim(row, reason, superseded.get(row.id)) for row in held]

    def _reclaim(self, row: _StoredJob, reason: str, superseded_by: int | None) -> ReclaimedJob:
        worker_id, was_started = row.worker_id, row.started_at is not None
        assert worker_id is not None  # a doing job always has a worker (a schema CHECK)
        if was_started and row.abort_requested_at is not None:
            row.last_error = JobError.aborted(row.aborted_by)
            self._record_attempt(row, worker_id, AttemptOutcome.ABORTED, row.last_error)
            row.worker_id, row.finished_at = None, self._clock()
            self._set_status(row, Status.CANCELLED)
        elif superseded_by is not None:
            if was_started:
                self._record_attempt(row, worker_id, AttemptOutcome.LOST, JobError.worker_lost(reason))
                row.scheduled_at = self._clock()
            row.worker_id = None
            self._supersede(row, superseded_by)
        elif not was_started:
            self._put_back(row)
        else:
            self._record_attempt(row, worker_id, AttemptOutcome.LOST, JobError.worker_lost(reason))
            row.last_error = JobError.worker_lost(reason)
            row.worker_id = None
            if row.may_retry():
                row.scheduled_at = self._clock()
                self._set_status(row, Status.TODO)
                self._wake_queues([row.queue])
            else:
                row.finished_at = self._clock()
                self._set_status(row, Status.FAILED)
        return ReclaimedJob(
            job_id=row.id,
            task_name=row.task_name,
            queue=row.queue,
            lock=row.lock,
            worker_id=worker_id,
            attempts=row.attempts,
            status=row.status,
            was_started=was_started,
        )

    def reclaim_stale_workers(self, heartbeat_timeout_s: float, excluding: Sequence[int] = ()) -> list[ReclaimedJob]:
        with self._condition:
            oldest_alive = self._clock() - datetime.timedelta(seconds=heartbeat_timeout_s)
            stale = [worker.worker_id for worker in self._workers.values() if worker.last_heartbeat_at < oldest_alive]
            # A doing job whose worker has no row any more is lost too.
            orphaned = {row.worker_id for row in self._jobs.values() if row.status is Status.DOING} - set(self._workers)
            spared = set(excluding)
            lost = [worker_id for worker_id in stale + list(orphaned) if worker_id is not None and worker_id not in spared]
            return self.reclaim_jobs_of(lost, f"no heartbeat for {heartbeat_timeout_s:g} s") if lost else []

    # -- retention -------------------------------------------------------------------------------

    def prune_finished_jobs(self, older_than_s: float, statuses: Collection[Status], batch_size: int) -> int:
        with self._condition:
            cutoff = self._clock() - datetime.timedelta(seconds=older_than_s)
            old = [
                row.id
                for row in self._jobs.values()
                if row.status in statuses and row.finished_at is not None and row.finished_at < cutoff
            ][:batch_size]
            for job_id in old:
                del self._jobs[job_id]  # a finished job heads no line: nothing to promote
                self._attempts.pop(job_id, None)  # as the foreign key's ON DELETE CASCADE
            return len(old)

    # -- periodic tasks ---------------------------------------------------------------------------

    def declare_periodic_schedules(self, schedules: Sequence[PeriodicSchedule]) -> None:
        with self._condition:
            now = self._clock()
            for schedule in schedules:
                known = self._schedules.get(schedule.key)
                self._schedules[schedule.key] = (schedule, known[1] if known else now, now)

    def list_periodic_schedules(self) -> PeriodicOverview:
        with self._condition:
            now = self._clock()
            declared = []
            for key, (schedule, first_declared_at, last_declared_at) in sorted(self._schedules.items()):
                ticks = self._ticks.get(key, {})
                last_tick = ticks[max(ticks)] if ticks else None
                declared.append(DeclaredSchedule.of(schedule, first_declared_at, last_declared_at, last_tick, now))
            return PeriodicOverview(now, declared)

    def record_periodic_ticks(self, ticks: Sequence[PeriodicTick]) -> list[RecordedTick]:
        with self._condition:  # one transaction, as PostgreSQL's
            now = self._clock()
            # Checked first, so that one job the store cannot keep records no tick.
            self._rows_of([tick.job for tick in ticks if tick.job is not None], now)
            newest = {schedule_key: max(known) for schedule_key, known in self._ticks.items() if known}
            recorded = []
            for tick in sorted(ticks, key=lambda tick: tick.tick_key):
                schedule_key = (tick.task_name, tick.periodic_id)
                if tick.tick_at > now or (schedule_key in newest and newest[schedule_key] >= tick.tick_at):
                    continue
                newest[schedule_key] = tick.tick_at
                recorded.append(RecordedTick(*tick.tick_key, None, tick.skipped_ticks, now))
            recorded = defer_tick_jobs(recorded, ticks, self.defer_jobs)
            for tick in recorded:
                stored = tick.as_recorded() if isinstance(tick, RefusedTick) else tick
                self._ticks.setdefault((tick.task_name, tick.periodic_id), {})[tick.tick_at] = stored
            return recorded

    def prune_periodic_ticks(self, older_than_s: float, batch_size: int) -> int:
        with self._condition:
            cutoff = self._clock() - datetime.timedelta(seconds=older_than_s)
            old = [
                (schedule_ticks, tick_at)
                for schedule_ticks in self._ticks.values()
                for tick_at in sorted(schedule_ticks)[:-1]  # never a schedule's newest
                if tick_at < cutoff
            ][:batch_size]
            for schedule_ticks, tick_at in old:
                del schedule_ticks[tick_at]
            return len(old)

    # -- inspection ------------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        with self._condition:
            row = self._jobs.get(job_id)
            return row.to_job() if row is not None else None

    def list_attempts(self, job_id: int) -> list[Attempt]:
        with self._condition:
            return list(self._attempts.get(job_id, []))

    def count_jobs(self, queue: str | None = None) -> dict[Status, int]:
        with self._condition:
            counts = collections.Counter(
                row.status for row in self._jobs.values() if queue is None or row.queue == queue
            )
            return {status: counts[status] for status in Status}


def _by_id(worker: _StoredWorker) -> int:
    return worker.worker_id


def _started_at(row: _StoredJob) -> datetime.datetime:
    assert row.started_at is not None
    return row.started_at


def _seconds_between(earlier: datetime.datetime | None, later: datetime.datetime) -> float | None:
    return (later - earlier).total_seconds() if earlier is not None else None


def _new_row(job: NewJob, now: datetime.datetime, max_arguments_bytes: int) -> _StoredJob:
    """The row a deferred job becomes, before it gets its id and its place in line."""
    args_json, kwargs_json = new_jobs.encode_job_arguments(job, max_arguments_bytes)
    return _StoredJob(
        id=0,
        queue=job.queue,
        task_name=job.task_name,
        args_json=args_json,
        kwargs_json=kwargs_json,
        lock=job.lock,
        status=Status.TODO,
        is_head=False,
        scheduled_at=_scheduled_at(job, now),
        attempts=0,
        max_attempts=job.max_attempts,
        worker_id=None,
        created_at=now,
        priority=int(job.priority),
        queueing_lock=job.queueing_lock,
    )


def _decode_arguments(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_jsonb_object, parse_float=_jsonb_number)


def _jsonb_number(text: str) -> float | int:
    """A number as jsonb returns it: jsonb keeps decimals, and writes a float that Python
    printed with a positive exponent (1e+20) without a decimal point, so it comes back an int."""
    if "e+" in text.lower():
        return int(decimal.Decimal(text))
    return float(text)


def _jsonb_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object as jsonb returns it: the last of duplicate keys, shorter keys first, then by bytes."""
    unique = dict(pairs)
    return {key: unique[key] for key in sorted(unique, key=lambda key: (len(key.encode()), key.encode()))}


def _scheduled_at(job: NewJob, now: datetime.datetime) -> datetime.datetime:
    scheduled_at = schedules.aware_scheduled_at(job.scheduled_at)
    if scheduled_at is not None:
        return scheduled_at.astimezone(datetime.timezone.utc)
    if job.schedule_in is None:
        return now
    return schedules.due_at(job.schedule_in, now)
