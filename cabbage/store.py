"""The JobStore contract that both stores keep, and load_store_from_path().

Everything the worker, the heartbeat thread and the supervisor need from the database is a
method here, so the same loops drive the PostgreSQL store and the in-memory one. Each docstring
states what both stores guarantee; ``tests/integration/test_store_contract.py`` checks it
against both.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import importlib
from typing import Any, Collection, Mapping, Sequence

from cabbage.exceptions import ConfigurationError
from cabbage.jobs import (
    UNREGISTERED_REASON,
    Attempt,
    ConnectionLimits,
    Job,
    JobError,
    NewJob,
    Outcome,
    ReclaimedJob,
    Status,
    WorkerInfo,
)
from cabbage.new_jobs import DEFAULT_MAX_ARGUMENTS_BYTES
from cabbage.periodic import PeriodicOverview, PeriodicSchedule, PeriodicTick, RecordedTick


class AbortNotices(abc.ABC):
    """A worker's subscription to its abort notifications (``JobStore.watch_aborts``)."""

    @abc.abstractmethod
    def fileno(self) -> int | None:
        """A descriptor that becomes readable when a notification may have come; None when
        there is none now (the connection is down: the heartbeats look instead)."""

    @abc.abstractmethod
    def take(self) -> bool:
        """Reads what arrived, without blocking: True when an abort was requested of this worker."""

    @abc.abstractmethod
    def close(self) -> None:
        """Ends the subscription (the heartbeat thread is done)."""


class JobStore(abc.ABC):
    """Where jobs live. Stores connect lazily: constructing one opens nothing."""

    #: How this store's sessions are named to the database (``pg_stat_activity``), unless the DSN
    #: names them: a supervisor names its master's, its workers' and their heartbeats' apart.
    application_name: str = "cabbage"

    #: How long a statement may wait for a lock before it fails with DatabaseBusy (None: as the
    #: server says). A master sets it, so that a table locked by an operator cannot freeze its
    #: loop. A store without locks ignores it.
    lock_timeout_s: float | None = None

    #: Whether a worker's claims, starts and finishes wait until their commit is durable. Off,
    #: a database crash can lose the last of them: those jobs run again once reclaimed, so a
    #: job still runs at least once, possibly twice. Defers always wait. A store without
    #: commits ignores it.
    synchronous_commit: bool = True
    #: The most a job's arguments may take as JSON text (positional and keyword together); a
    #: defer above it raises ArgumentsTooLargeError and inserts nothing. Both stores take it as
    #: an option (``cabbage.TaskManager(max_arguments_bytes=...)`` passes it on).
    max_arguments_bytes: int = DEFAULT_MAX_ARGUMENTS_BYTES

    # -- deferring ---------------------------------------------------------------------------

    @abc.abstractmethod
    def defer_jobs(self, jobs: Sequence[NewJob], connection: Any = None) -> list[int]:
        """Inserts the jobs in one round trip and returns their ids, in order.

        A job with a lock queues behind the earlier jobs of that lock (creation order).
        A job whose arguments or options it cannot keep (``cabbage.new_jobs``,
        ``cabbage.schedules``) is refused, and then none of the jobs is inserted. A job with a
        queueing lock held by a ``todo`` job, or repeating the queueing lock of an earlier job of
        the same call, is refused too: ``AlreadyEnqueued`` names each such job (by position, from
        1) and the job it clashes with, and nothing is inserted, whatever the races.
        With ``connection`` (a psycopg2 connection, PostgreSQL store only), the insert joins
        the caller's transaction and is committed or rolled back with it; a refused insert
        leaves that transaction as it was before, usable. Otherwise it is committed before
        this returns. Idle workers of the job's queue are woken.
        """

    def defer_job(self, job: NewJob, connection: Any = None) -> int:
        """Inserts one job; see ``defer_jobs``."""
        return self.defer_jobs([job], connection=connection)[0]

    def defer_calls(
        self, job: NewJob, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], connection: Any = None
    ) -> list[int]:
        """Inserts one job per ``(args, kwargs)`` call, each like ``job`` but for its arguments,
        in one round trip; returns their ids, in order. See ``defer_jobs``."""
        return self.defer_jobs(
            [dataclasses.replace(job, args=tuple(args), kwargs=kwargs) for args, kwargs in calls], connection=connection
        )

    async def defer_job_async(self, job: NewJob) -> int:
        """``defer_job`` awaited from an event loop, which it never blocks. The default runs the
        call in a thread; the PostgreSQL store awaits the database on the loop itself."""
        return await asyncio.to_thread(self.defer_job, job)

    async def defer_calls_async(self, job: NewJob, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]]) -> list[int]:
        """``defer_calls`` awaited from an event loop, which it never blocks; see ``defer_job_async``."""
        return await asyncio.to_thread(self.defer_calls, job, calls)

    # -- claiming and finishing (the worker's hot path) ----------------------------------------

    @abc.abstractmethod
    def claim_jobs(self, worker_id: int, queues: Sequence[str] | None, limit: int = 1, *, start_all: bool = False) -> list[Job]:
        """Claims up to ``limit`` due jobs of ``queues`` (all queues when None) for a worker.

        Only the head of each lock's line is claimable, so no two jobs of one lock are ever
        ``doing``, and a lock's jobs start in creation order whatever their priorities. Due
        jobs come by ``priority`` (highest first), then ``scheduled_at``, then creation order.
        Each claimed job is ``doing`` and held by ``worker_id``. The *first* job returned is
        started: its attempt number
        (``attempts``) is incremented and ``started_at`` set. The others are only reserved
        (``started_at`` None, ``attempts`` unchanged) until ``start_job``; if the worker is
        lost before that, they go back to ``todo`` without using an attempt. With ``start_all``
        every job returned is started (a worker that runs them all at once).
        Two workers never claim the same job.
        """

    @abc.abstractmethod
    def start_job(self, job_id: int, worker_id: int) -> Job | None:
        """Begins the attempt of a job this worker reserved (attempts + 1, ``started_at`` now).

        Returns the started job, or None when the job is no longer reserved by this worker
        (it was reclaimed): the worker must then skip it.
        """

    @abc.abstractmethod
    def finish_job(self, job_id: int, worker_id: int, attempt: int, outcome: Outcome) -> bool:
        """Records how attempt ``attempt`` of a job ended, if this worker still owns it.

        ``outcome.status`` SUCCEEDED or FAILED ends the job (``finished_at`` set) and frees its
        lock for the next job of the line; TODO puts it back, due ``outcome.retry_in_s`` from
        now, keeping its priority and its place at the head of its lock's line; but when a
        ``todo`` job holds its queueing lock, it ends ``cancelled`` instead, its error
        ``JobError.superseded``. CANCELLED (an attempt that knew of its abort), and any outcome
        but SUCCEEDED of an attempt whose abort was requested (``abort_jobs``), ends the job
        ``cancelled``, not retried, its error ``JobError.aborted`` and the attempt kept as
        ``aborted``. The error, if any, is stored. The attempt is added to the job's history
        (``list_attempts``). Returns False, changing nothing, when the attempt is no longer this
        worker's (reclaimed meanwhile): the fence of invariant 5.
        """

    def finish_and_start(
        self, job_id: int, worker_id: int, attempt: int, outcome: Outcome, next_job_id: int | None
    ) -> tuple[bool, Job | None]:
        """``finish_job`` then, if ``next_job_id`` is given, ``start_job`` on it.

        A store may do both in one round trip; the result is the same as the two calls.
        """
        finished = self.finish_job(job_id, worker_id, attempt, outcome)
        started = self.start_job(next_job_id, worker_id) if next_job_id is not None else None
        return finished, started

    def finish_and_claim(
        self, job_id: int, worker_id: int, attempt: int, outcome: Outcome, queues: Sequence[str] | None, limit: int
    ) -> tuple[bool, list[Job]]:
        """``finish_job`` then, if the attempt was this worker's, ``claim_jobs(worker_id, queues,
        limit)``: the next jobs, the first started, in the same round trip in a store that can.

        Claimed after the finish, so the next job of the finished job's lock can be among them.
        """
        finished = self.finish_job(job_id, worker_id, attempt, outcome)
        return finished, self.claim_jobs(worker_id, queues, limit) if finished and limit > 0 else []

    def finish_jobs_and_claim(
        self, worker_id: int, finishes: Sequence[tuple[int, int, Outcome]], queues: Sequence[str] | None, limit: int
    ) -> tuple[set[int], list[Job]]:
        """``finish_job`` for each ``(job_id, attempt, outcome)``, each fenced by its own attempt,
        then, if any was this worker's, ``claim_jobs(worker_id, queues, limit, start_all=True)``:
        the ids of the attempts finished, and the jobs claimed. A store may do it all in one
        round trip and one commit; the result is the same as the calls one by one.
        """
        finished = {job_id for job_id, attempt, outcome in finishes if self.finish_job(job_id, worker_id, attempt, outcome)}
        return finished, self.claim_jobs(worker_id, queues, limit, start_all=True) if finished and limit > 0 else []

    @abc.abstractmethod
    def held_jobs(self, worker_id: int) -> list[Job]:
        """The jobs ``worker_id`` holds (``doing``: started or reserved), in claim order."""

    @abc.abstractmethod
    def release_jobs(self, job_ids: Sequence[int], worker_id: int) -> int:
        """Gives back jobs this worker reserved but did not start: ``todo`` again, no attempt used.

        A job whose queueing lock a newer job holds (``todo``, or given back in the same call)
        ends ``cancelled`` instead, superseded. Returns how many were released (a job
        reclaimed meanwhile is skipped).
        """

    @abc.abstractmethod
    def unstart_jobs(self, job_ids: Sequence[int], worker_id: int) -> int:
        """Takes back the start of jobs a lost worker had started but never begun to run (a
        prefetch, ``Worker(prefetch=...)``): reserved again, the attempt their start counted
        unused, so that the reclaim that follows gives them back to ``todo`` without using one
        (invariant 4). Only jobs still ``doing`` and started under ``worker_id`` change; returns
        how many did. Its caller must know that none began: a supervisor's master learns it
        from its child's reports, each start written before the job may run.
        """

    @abc.abstractmethod
    def seconds_until_next_due(self, queues: Sequence[str] | None) -> float | None:
        """How long until the earliest job of ``queues`` (all queues when None) that a claim
        could take becomes due, in seconds on the store's clock: 0 when one is due now, None
        when no ``todo`` job of those queues heads its lock's line. Jobs waiting behind their
        lock, running or finished do not count; every priority level does. A seconds count
        rather than a time, so that a worker on a host whose clock is off still waits the right
        while. In PostgreSQL its cost does not grow with the jobs scheduled for later
        (invariant 6).
        """

    @abc.abstractmethod
    def wait_for_jobs(self, queues: Sequence[str] | None, timeout_s: float) -> bool:
        """Blocks until a job may be available in ``queues`` or ``timeout_s`` passed.

        Woken by deferrals (LISTEN/NOTIFY for PostgreSQL) within milliseconds, those of jobs
        scheduled for later too (a worker waiting for a later one then waits less); returns
        True when woken, False on timeout or ``interrupt_wait``. A spurious wake-up is allowed.
        """

    def interrupt_wait(self) -> None:
        """Makes a ``wait_for_jobs`` in progress return soon; safe to call from another thread
        or a signal handler's deferred code. The default does nothing (the wait times out)."""

    # -- workers and heartbeats -----------------------------------------------------------------

    @abc.abstractmethod
    def register_worker(self, hostname: str, pid: int, queues: Sequence[str] | None) -> int:
        """Adds a worker row, heartbeat now, and returns its ``worker_id``."""

    @abc.abstractmethod
    def record_heartbeat(self, worker_id: int) -> bool:
        """Marks the worker alive now (store clock). False if its row is gone (it was reclaimed)."""

    def unregister_worker(self, worker_id: int) -> None:
        """Removes a worker that stops; jobs it still reserved go back to ``todo``, and a started
        job it left behind (a worker that did not stop cleanly) is reclaimed as by
        ``reclaim_jobs_of``, rather than left stuck."""
        self.reclaim_jobs_of([worker_id], UNREGISTERED_REASON)

    @abc.abstractmethod
    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker with its heartbeat age and current started job, on the store clock."""

    @abc.abstractmethod
    def reclaim_jobs_of(self, worker_ids: Sequence[int], reason: str) -> list[ReclaimedJob]:
        """Takes back the jobs of lost workers and removes their rows (invariant 4).

        A started job goes back to ``todo``, due now, when its retry policy allows another attempt, else
        ``failed``; either way its error says ``worker lost: <reason>`` and its lock is free
        for its line. A reserved job goes back to ``todo`` without using an attempt. A started
        attempt is added to the job's history as ``lost``. A job going back whose queueing lock
        a newer job holds (``todo``, or going back with it) is ``cancelled`` instead, superseded;
        a started job whose abort was requested ends ``cancelled`` as aborted (``JobError.aborted``,
        its attempt kept as ``aborted``).
        Each job is reclaimed by one caller only, even when several race; the others get an
        empty list.
        """

    @abc.abstractmethod
    def reclaim_stale_workers(self, heartbeat_timeout_s: float, excluding: Sequence[int] = ()) -> list[ReclaimedJob]:
        """``reclaim_jobs_of`` every worker whose last heartbeat is older than the timeout, and
        every ``doing`` job whose worker has no row any more, but those of ``excluding`` (a
        master's own live children: it judges them from their reports, and a database outage
        makes their heartbeats look old without their having stopped)."""

    # -- aborts -----------------------------------------------------------------------------------

    @abc.abstractmethod
    def abort_requests_of(self, worker_id: int) -> dict[int, str | None]:
        """The jobs this worker runs whose abort an operator requested (``abort_jobs`` of
        ``cabbage.admin.Admin``): job id -> who asked."""

    def watch_aborts(self, worker_id: int) -> "AbortNotices | None":
        """Notifications of aborts requested of this worker's jobs, for its heartbeat thread to
        wait on; None (the default) when the store sends none: heartbeats look each interval."""
        return None

    # -- retention ------------------------------------------------------------------------------

    @abc.abstractmethod
    def prune_finished_jobs(self, older_than_s: float, statuses: Collection[Status], batch_size: int) -> int:
        """Deletes one batch of at most ``batch_size`` jobs whose status is among ``statuses``
        (finished ones) and that finished more than ``older_than_s`` ago on the store's clock;
        returns how many. Jobs another session holds are skipped, never waited for, so workers
        keep claiming meanwhile. ``cabbage.retention.prune_in_batches`` loops over batches."""

    # -- periodic tasks -------------------------------------------------------------------------

    @abc.abstractmethod
    def declare_periodic_schedules(self, schedules: Sequence[PeriodicSchedule]) -> None:
        """Records the schedules a supervisor runs, so that operators see them without the app:
        a new one with ``first_declared_at`` now, a known one with its cron, timezone and
        catch-up replaced and ``last_declared_at`` now (store clock). None is ever removed."""

    @abc.abstractmethod
    def list_periodic_schedules(self) -> PeriodicOverview:
        """The store's clock now, and every declared schedule in (task name, periodic id) order,
        with its newest recorded tick and its next tick after now."""

    @abc.abstractmethod
    def record_periodic_ticks(self, ticks: Sequence[PeriodicTick]) -> list[RecordedTick]:
        """Records each tick once, with its job, in one transaction; returns those recorded here.

        A tick is recorded only when it is due on the store's clock (``tick_at`` at or before
        now) and newer than every tick recorded for its schedule, and only once, whatever the
        number of callers racing (a unique constraint on task name, periodic id and tick): a
        caller that loses the race gets nothing back for it. A recorded tick's job is inserted
        by ``defer_jobs``, in the same transaction (``cabbage.periodic.defer_tick_jobs``); a
        job its queueing lock refuses (a todo job holds the key) inserts nothing, and its tick
        is recorded as one skipped, answered as a ``RefusedTick`` (the key, the waiting job),
        the others recorded all the same. A tick whose ``job`` is None records
        ``skipped_ticks`` and inserts no job. A job the store cannot keep (arguments too large,
        a constraint) records no tick of the call. Ticks are taken in (task name, periodic id,
        tick) order, so racing callers never deadlock.
        """

    @abc.abstractmethod
    def prune_periodic_ticks(self, older_than_s: float, batch_size: int) -> int:
        """Deletes at most ``batch_size`` ticks recorded for a tick more than ``older_than_s``
        ago (store clock), never a schedule's newest; returns how many. Rows another session
        holds are skipped. The newest kept, no older tick can ever be recorded again."""

    # -- inspection -----------------------------------------------------------------------------

    @abc.abstractmethod
    def get_job(self, job_id: int) -> Job | None:
        """The job with that id, or None."""

    @abc.abstractmethod
    def list_attempts(self, job_id: int) -> list[Attempt]:
        """The job's attempts that ended (finished or reclaimed), oldest first: the last
        ``cabbage.jobs.KEPT_ATTEMPTS`` (20) of them, each with its worker, times, outcome and
        error. Empty for a job without any, or no such job; pruning a job deletes its
        attempts."""

    @abc.abstractmethod
    def count_jobs(self, queue: str | None = None) -> dict[Status, int]:
        """How many jobs have each status (every status present, zero included)."""

    def connection_limits(self) -> ConnectionLimits | None:
        """The database server's session limits and use (None for a store without sessions)."""
        return None

    def open_sibling(self) -> "JobStore":
        """A store on the same jobs with a connection of its own, for another thread (the
        heartbeat thread). The in-memory store returns itself: it is thread-safe."""
        return self

    def check_schema(self) -> None:
        """Raises SchemaError when the store is not ready for this cabbage (no-op in memory)."""

    def close(self) -> None:
        """Releases connections opened by this process. A connection inherited across fork is
        dropped, never closed: closing it would end the parent's session."""


def load_store_from_path(path: str) -> type[JobStore]:
    """Imports a JobStore class named by a dotted path, as in the how-to's testing snippet.

    >>> store_class = load_store_from_path("cabbage.testing.InMemoryJobStore")
    """
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ConfigurationError(f"store path must be 'module.Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import store module {module_name!r} of {path!r}: {exc}") from exc
    store_class = getattr(module, class_name, None)
    if not (isinstance(store_class, type) and issubclass(store_class, JobStore)):
        raise ConfigurationError(f"{path!r} does not name a JobStore class")
    return store_class


__all__ = [
    "JobStore", "AbortNotices", "load_store_from_path", "Attempt", "Job", "JobError", "NewJob", "Outcome", "ReclaimedJob", "WorkerInfo"
]
