"""The master's duties in the database, on a thread of their own: reclaiming the jobs of lost
children and of stale workers of every host, retention, saying what limit refused the
children a connection, and deferring the ticks of periodic tasks (``supervisor.periodic_duty``).

The master's loop never waits for the database: a cut network can hold a query for as long as
TCP takes to give up, and the loop must go on reaping, and killing a child whose lease is about
to end, meanwhile. So these duties run on the "database thread", through the JobStore contract:
the loop only queues what it learns (a lost child to reclaim, its live children's worker ids,
a child refused a connection, the app whose schedules to run) and reads what the thread found
(whether the database is down, whether an outage just ended). While the database is
unreachable the duties back off together (``health.DatabaseLink``), the outage is logged once
(``database_unreachable``) and its end once (``database_reconnected``); the reclaims of
children lost meanwhile wait in the queue. A statement that gave up waiting for a lock (the
master's store has a ``lock_timeout``) is tried again at the next check, logged once as
``database_busy``. No SQL here: the store has it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Sequence

import structlog

from cabbage import TaskManager, retention
from cabbage.dsn import SLOTS_ADVICE
from cabbage.exceptions import DatabaseBusy, DatabaseUnavailable
from cabbage.jobs import ReclaimedJob, Status
from cabbage.store import JobStore
from supervisor import health
from supervisor.config import SupervisorConfig
from supervisor.periodic_duty import PeriodicDuty

# With --retention: how often a master looks for old finished jobs once none were left, and
# how soon it takes the next batch while some are.
PRUNE_INTERVAL_S = 60.0
PRUNE_CATCH_UP_S = 1.0
# A child holds two sessions: the worker loop's and its heartbeat thread's.
CONNECTIONS_PER_WORKER = 2
# How long a stopping master waits for the thread's last reclaims before it exits anyway.
LAST_RECLAIMS_PATIENCE_S = 5.0


@dataclasses.dataclass(frozen=True)
class PendingReclaim:
    """A lost child whose jobs are still to be taken back (the database may be down)."""

    pid: int
    worker_id: int | None  # None: found by hostname and pid in list_workers()
    reason: str
    never_begun: frozenset[int] = frozenset()  # jobs it held started, never begun: back unused


class DatabaseDuties:
    """The database thread and the little state it shares with the master's loop, under a lock.

    Loop side: ``start``, ``queue_reclaim``, ``set_live_worker_ids``, ``set_periodic_app``,
    ``note_connection_slots_exhausted``, ``note_all_registered``, ``is_down``,
    ``take_reconnected``, ``close``. Everything else runs on the thread.
    """

    def __init__(self, store: JobStore, hostname: str, config: SupervisorConfig) -> None:
        self.store, self.hostname, self.config = store, hostname, config
        self.log = structlog.get_logger()
        self.link = health.DatabaseLink()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._pending: dict[int, PendingReclaim] = {}
        self._live_worker_ids: tuple[int, ...] = ()
        self._slots_report_wanted: int | None = None  # a refusal to report, with the workers wanted
        self._reconnected = False
        self.is_busy = False  # a statement gave up waiting for a lock: logged once until one works
        # Refused connections reported: once until every child registers.
        self.is_out_of_slots = False
        self.stale_reclaims_resume_at = 0.0  # after an outage: see _reclaim_lost_workers
        self.next_heartbeat_check = 0.0
        self.next_prune_at = 0.0
        self.periodic = PeriodicDuty(store)
        # The current generation's app (set by the loop).
        self._periodic_app: TaskManager | None = None
        # When a step last got an answer: the master checked the schema just before it starts us.
        self.answered_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="cabbage-master-database", daemon=True)

    # -- the loop's side ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def is_down(self) -> bool:
        return self.link.down_since is not None

    def has_answered_within(self, seconds: float) -> bool:
        """Whether the database answered the master lately: a query hung on a cut network says
        nothing yet, so silence counts as an outage too."""
        return not self.is_down and time.monotonic() - self.answered_at <= seconds

    @property
    def pending_pids(self) -> list[int]:
        with self._lock:
            return sorted(self._pending)

    def queue_reclaim(self, pid: int, worker_id: int | None, reason: str, never_begun: frozenset[int] = frozenset()) -> None:
        """Takes the jobs of a lost child back as soon as the database answers; those of
        ``never_begun`` (a prefetch it reported and never began) without using an attempt."""
        with self._lock:
            self._pending[pid] = PendingReclaim(pid, worker_id, reason, never_begun)
        self._wake.set()

    def set_live_worker_ids(self, worker_ids: Sequence[int]) -> None:
        """Our children alive and not being killed: never reclaimed for their heartbeats' age."""
        with self._lock:
            self._live_worker_ids = tuple(worker_ids)

    def set_periodic_app(self, task_manager: TaskManager) -> None:
        """The app whose schedules' ticks to defer; a new one (a reload) is run at once."""
        with self._lock:
            is_new, self._periodic_app = task_manager is not self._periodic_app, task_manager
        if is_new:
            self._wake.set()

    def note_connection_slots_exhausted(self, workers_wanted: int) -> None:
        """A child gave up for want of a free connection slot: one error line per episode."""
        with self._lock:
            if self.is_out_of_slots:
                return
            self.is_out_of_slots = True
            self._slots_report_wanted = workers_wanted
        self._wake.set()

    def note_all_registered(self) -> None:
        """Every wanted child registered: the shortage of connection slots is over."""
        with self._lock:
            self.is_out_of_slots = False

    def take_reconnected(self) -> bool:
        """Whether an outage ended since the last call."""
        with self._lock:
            reconnected, self._reconnected = self._reconnected, False
        return reconnected

    def close(self) -> None:
        """Stops the thread after a last try at the pending reclaims (bounded: a database that
        does not answer must not keep the master from exiting; other masters reclaim later)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(LAST_RECLAIMS_PATIENCE_S)
        if not self._thread.is_alive():
            self.store.close()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        # Threads do not inherit context variables: every line of this thread, those of the
        # library it calls included (jobs_pruned), says it is the master's.
        structlog.contextvars.bind_contextvars(role="master")
        try:
            while not self._stopping:
                self._do_what_is_due(time.monotonic())
                self._wake.wait(self._sleep_s())
                self._wake.clear()
        finally:
            self._reclaim_pending()  # a last chance; stale-worker reclaim covers what is left

    def _sleep_s(self) -> float:
        due = [max(self.next_heartbeat_check, self.link.retry_at)]
        if self.config.retention_s is not None:
            due.append(max(self.next_prune_at, self.link.retry_at))
        if self._periodic_app is not None:  # set_periodic_app wakes the thread for the first one
            # Within milliseconds of a tick.
            due.append(max(self.periodic.next_run_at, self.link.retry_at))
        return max(0.0, min(due) - time.monotonic())

    def _do_what_is_due(self, now: float) -> None:
        with self._lock:
            slots_report_wanted, self._slots_report_wanted = self._slots_report_wanted, None
        if slots_report_wanted is not None:
            self._report_connection_slots_exhausted(slots_report_wanted)
        self._reclaim_pending()
        if now >= max(self.next_heartbeat_check, self.link.retry_at):
            self._reclaim_lost_workers(now)
        if self.config.retention_s is not None and now >= max(self.next_prune_at, self.link.retry_at):
            self._prune_finished_jobs()
        with self._lock:
            app = self._periodic_app
        if app is not None and self.periodic.is_due(time.monotonic(), app):
            # Each due tick deferred once across hosts.
            self._run_step(lambda: self.periodic.run(app))

    def _reclaim_lost_workers(self, now: float) -> None:
        """Our own lost children first, so that their jobs carry the precise reason, then the
        workers of any other host whose heartbeat is older than the timeout. Our live children
        are never reclaimed for their heartbeats' age: their reports say how they are. Right
        after an outage of our own, stale workers wait two intervals: theirs were cut off too,
        and need a heartbeat's time to be heard again."""
        self.next_heartbeat_check = now + self.config.heartbeat_interval_s
        if now < self.stale_reclaims_resume_at:
            return
        timeout_s = self.config.heartbeat_timeout_s
        with self._lock:
            excluding = list(self._live_worker_ids)
        reason = f"no heartbeat for {timeout_s:g} s"
        if self._run_step(lambda: log_reclaimed(self.log, self.store.reclaim_stale_workers(timeout_s, excluding), reason)):
            self.is_busy = False  # it touches the jobs table: a lock on it is gone

    def _reclaim_pending(self) -> None:
        with self._lock:
            pending = list(self._pending.values())
        if pending:
            self._run_step(lambda: self._reclaim(pending))

    def _reclaim(self, pending: list[PendingReclaim]) -> None:
        unknown = [lost.pid for lost in pending if lost.worker_id is None]
        rows = health.match_heartbeats(unknown, self.store.list_workers(), self.hostname) if unknown else {}
        for lost in pending:
            row = rows.get(lost.pid)
            worker_id = lost.worker_id if row is None else row.worker_id
            if worker_id is not None:  # None: it died before registering, or it unregistered itself
                # Reserved again first: a master lost between the two leaves them for any reclaim.
                self.store.unstart_jobs(sorted(lost.never_begun), worker_id)
                log_reclaimed(self.log, self.store.reclaim_jobs_of([worker_id], lost.reason), lost.reason)
            with self._lock:
                self._pending.pop(lost.pid, None)

    def _prune_finished_jobs(self) -> None:
        """One bounded batch of --retention, its own short transaction."""
        assert self.config.retention_s is not None
        retention_s = self.config.retention_s
        self.next_prune_at = time.monotonic() + PRUNE_INTERVAL_S
        deleted: list[int] = []
        if self._run_step(lambda: deleted.append(retention.prune_in_batches(self.store, retention_s, max_batches=1))):
            if deleted[0] >= retention.PRUNE_BATCH_SIZE:
                self.next_prune_at = time.monotonic() + PRUNE_CATCH_UP_S  # a full batch: more remain

    def _report_connection_slots_exhausted(self, workers_wanted: int) -> None:
        limits: list[Any] = []
        self._run_step(lambda: limits.append(self.store.connection_limits()))
        shown = limits[0] if limits else None
        self.log.error(
            "database_connections_exhausted",
            limits=str(shown) if shown is not None else None,
            workers=workers_wanted,
            connections_per_worker=CONNECTIONS_PER_WORKER,
            advice=SLOTS_ADVICE,
        )

    def _run_step(self, step: Callable[[], None]) -> bool:
        """Runs a step that uses the database, unless backing off after a failure; whether it ran."""
        now = time.monotonic()
        if not self.link.is_due(now):
            return False
        try:
            step()
        except DatabaseUnavailable as exc:
            if self.link.failed(now):
                self.log.error("database_unreachable", error=str(exc))  # once per outage
            return False
        except DatabaseBusy as exc:
            if not self.is_busy:
                self.is_busy = True
                self.log.warning("database_busy", error=str(exc))
            return False
        self.answered_at = time.monotonic()
        outage_s = self.link.succeeded(now)
        if outage_s is not None:
            self.log.info("database_reconnected", outage_s=round(outage_s, 1))
            self.stale_reclaims_resume_at = now + 2 * self.config.heartbeat_interval_s
            with self._lock:
                self._reconnected = True
        return True


def log_reclaimed(log: Any, reclaimed: Sequence[ReclaimedJob], reason: str) -> None:
    if not reclaimed:
        return
    job_ids = {status: [job.job_id for job in reclaimed if job.status is status] for status in (Status.TODO, Status.FAILED)}
    log.warning("jobs_reclaimed", job_ids=[job.job_id for job in reclaimed], worker_ids=sorted({job.worker_id for job in reclaimed}),
                retried_job_ids=job_ids[Status.TODO] or None, failed_job_ids=job_ids[Status.FAILED] or None, reason=reason)  # fmt: skip
