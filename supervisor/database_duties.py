"""The master's duties in the database, through the JobStore contract: reading its children's
heartbeats, reclaiming the jobs of lost children and of stale workers of every host, retention.

Every call goes through ``run``: while the database is unreachable the duties back off together
(``health.DatabaseLink``), the outage is logged once (``database_unreachable``) and its end once
(``database_reconnected``), and the reclaims of children lost meanwhile wait in
``pending_reclaims`` until it is back. No SQL here: the store has it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Mapping, Sequence

import structlog

from cabbage import retention
from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import ReclaimedJob, Status, WorkerInfo
from cabbage.store import JobStore
from supervisor import health
from supervisor.config import SupervisorConfig

log = structlog.get_logger()

# With --retention: how often a master looks for old finished jobs once none were left, and
# how soon it takes the next batch while some are.
PRUNE_INTERVAL_S = 60.0
PRUNE_CATCH_UP_S = 1.0


@dataclasses.dataclass(frozen=True)
class PendingReclaim:
    """A lost child whose jobs are still to be taken back (the database may be down)."""

    pid: int
    worker_id: int | None  # None: found by hostname and pid in list_workers()
    reason: str


class DatabaseDuties:
    """What the master does in the database, and when it is next due (``time.monotonic()``).

    ``on_reconnected`` is called when an outage ends.
    """

    def __init__(
        self, store: JobStore, hostname: str, config: SupervisorConfig, on_reconnected: Callable[[], None]
    ) -> None:
        self.store, self.hostname, self.config = store, hostname, config
        self.on_reconnected = on_reconnected
        self.link = health.DatabaseLink()
        self.pending_reclaims: dict[int, PendingReclaim] = {}
        self.next_heartbeat_check = 0.0
        self.next_prune_at = 0.0

    @property
    def is_down(self) -> bool:
        return self.link.down_since is not None

    def due_times(self) -> list[float]:
        """When each duty is next due, for the master's sleep."""
        due = [max(self.next_heartbeat_check, self.link.retry_at)]
        if self.config.retention_s is not None:
            due.append(max(self.next_prune_at, self.link.retry_at))
        return due

    def heartbeat_check_due(self, now: float) -> bool:
        return now >= max(self.next_heartbeat_check, self.link.retry_at)

    def prune_due(self, now: float) -> bool:
        return self.config.retention_s is not None and now >= max(self.next_prune_at, self.link.retry_at)

    # -- heartbeats and reclaim ---------------------------------------------------------------

    def read_heartbeats(self, pids: Iterable[int]) -> Mapping[int, WorkerInfo] | None:
        """The worker row of each of these children (pid -> row); None while the database is down."""
        self.next_heartbeat_check = time.monotonic() + self.config.heartbeat_interval_s
        found: dict[int, WorkerInfo] = {}
        if not self.run(lambda: found.update(health.match_heartbeats(pids, self.store.list_workers(), self.hostname))):
            return None
        return found

    def reclaim_lost_workers(self) -> None:
        """Our own lost children first, so that their jobs carry the precise reason, then the
        workers of any host whose heartbeat is older than the timeout."""
        timeout_s = self.config.heartbeat_timeout_s
        self.run(self._reclaim_pending_now)
        self.run(lambda: log_reclaimed(self.store.reclaim_stale_workers(timeout_s), f"no heartbeat for {timeout_s:g} s"))

    def queue_reclaim(self, pid: int, worker_id: int | None, reason: str) -> None:
        self.pending_reclaims[pid] = PendingReclaim(pid, worker_id, reason)

    def reclaim_pending(self) -> None:
        if self.pending_reclaims:
            self.run(self._reclaim_pending_now)

    def _reclaim_pending_now(self) -> None:
        if not self.pending_reclaims:
            return
        unknown = [pending.pid for pending in self.pending_reclaims.values() if pending.worker_id is None]
        rows = health.match_heartbeats(unknown, self.store.list_workers(), self.hostname) if unknown else {}
        for pending in list(self.pending_reclaims.values()):
            row = rows.get(pending.pid)
            worker_id = pending.worker_id if row is None else row.worker_id
            if worker_id is not None:  # None: it died before registering, or it unregistered itself
                log_reclaimed(self.store.reclaim_jobs_of([worker_id], pending.reason), pending.reason)
            del self.pending_reclaims[pending.pid]

    # -- retention ----------------------------------------------------------------------------

    def prune_finished_jobs(self) -> None:
        """One bounded batch of --retention, its own short transaction: reaping never waits long."""
        assert self.config.retention_s is not None
        retention_s = self.config.retention_s
        self.next_prune_at = time.monotonic() + PRUNE_INTERVAL_S
        deleted: list[int] = []
        if self.run(lambda: deleted.append(retention.prune_in_batches(self.store, retention_s, max_batches=1))):
            if deleted[0] >= retention.PRUNE_BATCH_SIZE:
                self.next_prune_at = time.monotonic() + PRUNE_CATCH_UP_S  # a full batch: more remain

    # -- the link -----------------------------------------------------------------------------

    def run(self, step: Callable[[], None]) -> bool:
        """Runs a step that uses the database, unless backing off after a failure; whether it ran."""
        now = time.monotonic()
        if not self.link.is_due(now):
            return False
        try:
            step()
        except DatabaseUnavailable as exc:
            if self.link.failed(now):
                log.error("database_unreachable", error=str(exc))  # once per outage
            return False
        outage_s = self.link.succeeded(now)
        if outage_s is not None:
            log.info("database_reconnected", outage_s=round(outage_s, 1))
            self.on_reconnected()
        return True

    def close(self) -> None:
        if self.pending_reclaims:
            self.reclaim_pending()  # a last chance; stale-worker reclaim covers what is left
        self.store.close()


def log_reclaimed(reclaimed: Sequence[ReclaimedJob], reason: str) -> None:
    if not reclaimed:
        return
    job_ids = {status: [job.job_id for job in reclaimed if job.status is status] for status in (Status.TODO, Status.FAILED)}
    log.warning("jobs_reclaimed", job_ids=[job.job_id for job in reclaimed], worker_ids=sorted({job.worker_id for job in reclaimed}),
                retried_job_ids=job_ids[Status.TODO] or None, failed_job_ids=job_ids[Status.FAILED] or None, reason=reason)  # fmt: skip
