"""The master loop of cabbage-supervisor: wait, then reconcile. No SQL, no os.fork.

The master's state is plain data: ``children`` (pid -> Child), ``wanted`` (how many workers),
``generation`` (bumped by each reload) and ``phase``. Signals only record an intent
(``handle_signal``); each turn of the loop then reaps, checks heartbeats when due, and spawns
or retires children toward what is wanted. Decisions are in ``health``, processes in
``children``, the database behind the JobStore contract (``list_workers``,
``reclaim_jobs_of``, ``reclaim_stale_workers``). When the database is unreachable the master
keeps reaping and respawning, logs the outage once and its end once, and retries with backoff.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import signal
import socket
import time
from typing import Callable, Sequence

import structlog

from cabbage import retention
from cabbage.exceptions import AppImportError, DatabaseUnavailable
from cabbage.jobs import ReclaimedJob, Status
from cabbage.store import JobStore
from supervisor import app_import, children, exit_codes, health, proctitle, signals
from supervisor.app_import import LoadedApp
from supervisor.children import Child, ChildSetup, ExitStatus
from supervisor.config import SupervisorConfig
from supervisor.systemd import SystemdNotifier

log = structlog.get_logger()

# The longest the loop sleeps with nothing due: a safety net, not a schedule. Every wake-up of
# an idle master costs CPU (its pages are cold by then): it wakes for what is due (heartbeat
# checks, deadlines, respawns, the watchdog, pruning), for signals and for dead children.
MAX_TICK_S = 5.0
MIN_WORKERS = 1
# With --retention: how often a master looks for old finished jobs once none were left, and
# how soon it takes the next batch while some are.
PRUNE_INTERVAL_S = 60.0
PRUNE_CATCH_UP_S = 1.0


class Phase(enum.Enum):
    RUNNING = "running"
    RELOADING = "reloading"  # from HUP until READY=1 is sent again
    STOPPING = "stopping"  # graceful: children finish their job
    STOPPING_NOW = "stopping now"  # fast: children are killed


@dataclasses.dataclass(frozen=True)
class PendingReclaim:
    """A lost child whose jobs are still to be taken back (the database may be down)."""

    pid: int
    worker_id: int | None  # None: found by hostname and pid in list_workers()
    reason: str


class Master:
    """The pre-fork master: ``Master(config, app, store, notifier).run()`` returns the exit status.

    ``store`` is the master's own store (``task_manager.store.open_sibling()``), so the app's
    store that children inherit never holds the master's connection.
    """

    def __init__(
        self,
        config: SupervisorConfig,
        app: LoadedApp,
        store: JobStore,
        notifier: SystemdNotifier,
        *,
        hostname: str | None = None,
    ) -> None:
        self.config, self.app, self.store, self.notifier = config, app, store, notifier
        self.hostname = hostname or socket.gethostname()
        self.signals = signals.SignalIntake()
        # Children watch the read end; the write end stays open here until the master dies.
        self.master_alive_read_fd, self.master_alive_write_fd = os.pipe()
        self.children: dict[int, Child] = {}
        self.wanted = config.workers
        self.generation = 1
        self.phase = Phase.RUNNING
        self.exit_code = exit_codes.EXIT_OK
        self.database = health.DatabaseLink()
        self.pending_reclaims: dict[int, PendingReclaim] = {}
        self.early_exits = 0  # children that died young in a row (health.count_early_exits)
        self.respawn_not_before = 0.0
        self.next_heartbeat_check = 0.0
        self.next_watchdog_at = 0.0
        self.next_prune_at = 0.0
        self.is_ready_sent = False
        self.title = ""

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self.signals.install()
        self.start_children()
        while not self.finished:
            self.signals.wait(timeout_s=self.tick_s)
            try:
                for signum in self.signals.drain():
                    self.handle_signal(signum)  # records an intent: stop, stop now, reload, +1, -1
                self.reap_children()  # waitpid(-1, WNOHANG) until empty; reclaim at once
                if self.heartbeat_check_due():
                    self.check_heartbeats()  # own children, and stale workers of other hosts
                self.reconcile_children()  # spawn or retire toward the wanted count
                if self.prune_due():
                    self.prune_finished_jobs()  # --retention: one bounded batch of old jobs
                self.report()  # process title, sd_notify STATUS / WATCHDOG
            except Exception:  # the loop's boundary: a failed step must not orphan the children
                log.exception("supervisor_step_failed")
                self.signals.wait(timeout_s=MAX_TICK_S)
        self.finish()
        return self.exit_code

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.STOPPING, Phase.STOPPING_NOW) and not self.children

    @property
    def tick_s(self) -> float:
        """How long the loop may sleep: until the next thing due, at most MAX_TICK_S."""
        now = time.monotonic()
        due = [max(self.next_heartbeat_check, self.database.retry_at), self.respawn_not_before]
        if self.notifier.watchdog_interval_s:
            due.append(self.next_watchdog_at)
        if self.config.retention_s is not None:
            due.append(max(self.next_prune_at, self.database.retry_at))
        due += [child.stop_deadline for child in self.children.values() if child.stop_deadline and not child.kill_reason]
        upcoming = [moment for moment in due if moment > now]
        return min(MAX_TICK_S, min(upcoming, default=math.inf) - now)

    def start_children(self) -> None:
        config = self.config
        log.info("supervisor_started", app=self.app.spec, workers=self.wanted, queues=config.queues,
                 heartbeat_interval_s=config.heartbeat_interval_s, heartbeat_timeout_s=config.heartbeat_timeout_s)  # fmt: skip
        now = time.monotonic()
        for worker_number in range(1, self.wanted + 1):
            self.spawn(worker_number, now)
        if not self.children:
            log.critical("supervisor_stopping", mode="fast", reason="no worker process could be started")
            self.exit_code = exit_codes.EXIT_CHILDREN_FAILED
            self.phase = Phase.STOPPING

    def finish(self) -> None:
        if self.pending_reclaims:
            self.reclaim_pending()  # a last chance; stale-worker reclaim covers what is left
        log.info("supervisor_stopped", exit_code=self.exit_code, unreclaimed_pids=sorted(self.pending_reclaims) or None)
        self.notifier.close()
        self.store.close()
        os.close(self.master_alive_read_fd)
        os.close(self.master_alive_write_fd)

    # -- signals ----------------------------------------------------------------------------

    def handle_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # reap_children runs right after
        effect, action = self._decide(signum)
        log.info("signal_received", signal=signals.name_of(signum), effect=effect, workers=self.wanted)
        action()

    def _decide(self, signum: int) -> tuple[str, Callable[[], None]]:
        """What a signal means in this phase: the effect to log, and the action to run after.

        TTIN and TTOU only change ``wanted``: reconcile_children spawns or retires toward it.
        """
        name = signals.name_of(signum)
        if signum == signal.SIGQUIT or (signum in (signal.SIGTERM, signal.SIGINT) and self.phase is Phase.STOPPING):
            if self.phase is Phase.STOPPING_NOW:
                return "none: already stopping now", _nothing
            return "fast stop", lambda: self.stop_now(name)
        if self.phase in (Phase.STOPPING, Phase.STOPPING_NOW):
            return "none: stopping", _nothing
        if signum in (signal.SIGTERM, signal.SIGINT):
            return "graceful stop", self.stop_gracefully
        if signum == signal.SIGHUP:
            return "reload", self.reload
        if signum == signal.SIGTTIN:
            self.wanted += 1
            return "one worker more", _nothing
        if signum == signal.SIGTTOU and self.wanted > MIN_WORKERS:
            self.wanted -= 1
            return "one worker fewer", _nothing
        return f"none: {MIN_WORKERS} worker is the minimum", _nothing

    def stop_gracefully(self) -> None:
        self.phase = Phase.STOPPING
        log.info("supervisor_stopping", mode="graceful", graceful_timeout_s=self.config.graceful_timeout_s, workers=len(self.children))
        self.notifier.stopping(self.status_line())
        self.ask_all_to_stop()

    def stop_now(self, signal_name: str) -> None:
        self.phase = Phase.STOPPING_NOW
        log.info("supervisor_stopping", mode="fast", workers=len(self.children))
        self.notifier.stopping(self.status_line())
        for child in list(self.children.values()):
            if child.kill_reason is None:
                self.kill_child(child, f"the supervisor was stopped fast ({signal_name})", level="warning")

    def reload(self) -> None:
        """A fresh import of the app; new children run it, the old ones stop gracefully."""
        self.phase = Phase.RELOADING
        self.notifier.reloading()
        log.info("supervisor_reloading", app=self.app.spec)
        try:
            app = app_import.reimport_app(self.app)
        except AppImportError as exc:
            # The old children keep running the old code; report() says READY again.
            log.error("app_import_failed", app=self.app.spec, reload=True, error=str(exc), exc_info=exc)
            return
        self.app = app
        self.generation += 1
        self.ask_all_to_stop()  # the new generation is spawned by reconcile_children

    # -- children ---------------------------------------------------------------------------

    def spawn(self, worker_number: int, now: float) -> None:
        setup = ChildSetup(self.config, self.app, self.hostname, master_alive_fd=self.master_alive_read_fd,
                           master_fds=(self.master_alive_write_fd,), signal_intake=self.signals)  # fmt: skip
        try:
            child = children.spawn_child(setup, worker_number, self.generation, now)
        except OSError as exc:  # fork refused: process or memory limits
            log.error("worker_spawn_failed", worker_number=worker_number, error=str(exc))
            self.delay_respawn(now, lifetime_s=0.0, worker_number=worker_number)
            return
        self.children[child.pid] = child

    def ask_all_to_stop(self) -> None:
        deadline = time.monotonic() + self.config.graceful_timeout_s
        for child in list(self.children.values()):
            self.ask_to_stop(child, deadline)

    def ask_to_stop(self, child: Child, deadline: float) -> None:
        if child.is_stopping or child.kill_reason is not None:
            return
        children.signal_child(child, signal.SIGTERM)
        self.children[child.pid] = dataclasses.replace(child, stop_deadline=deadline)

    def kill_child(self, child: Child, reason: str, *, level: str = "error") -> None:
        """SIGKILLs a child and queues the reclaim of its jobs with ``reason``."""
        # SIGKILL, not SIGTERM: a stopped (SIGSTOP) or hung child cannot run a handler.
        children.signal_child(child, signal.SIGKILL)
        self.children[child.pid] = dataclasses.replace(child, kill_reason=reason)
        getattr(log, level)("worker_killed", child_pid=child.pid, worker_number=child.worker_number,
                            worker_id=child.worker_id, signal="SIGKILL", reason=reason)  # fmt: skip
        self.queue_reclaim(child, f"process {child.pid} was killed: {reason}")

    def reap_children(self) -> None:
        for exited in children.reap_children():
            child = self.children.pop(exited.pid, None)
            if child is not None:
                self.on_child_exit(child, exited)
        self.reclaim_pending()

    def on_child_exit(self, child: Child, exited: ExitStatus) -> None:
        now = time.monotonic()
        lifetime_s = now - child.started_at
        is_expected = exited.is_clean or child.is_stopping or child.kill_reason is not None
        outcome = {"signal": exited.signal_name} if exited.signal_name else {"exit_code": exited.exit_code}
        (log.info if is_expected else log.warning)("worker_exited", child_pid=child.pid, worker_number=child.worker_number,
                                                   worker_id=child.worker_id, lifetime_s=round(lifetime_s, 1),
                                                   reason=child.kill_reason or exited.describe(), **outcome)  # fmt: skip
        if child.kill_reason is None:  # a killed child's jobs were queued when it was killed
            # Even after a clean exit: a task that called sys.exit(0) left its job doing.
            self.queue_reclaim(child, exited.describe())
        if not is_expected and self.phase is Phase.RUNNING:
            self.delay_respawn(now, lifetime_s, child.worker_number)

    def delay_respawn(self, now: float, lifetime_s: float, worker_number: int) -> None:
        self.early_exits = health.count_early_exits(self.early_exits, lifetime_s)
        delay_s = health.respawn_delay_s(self.early_exits)
        if delay_s > 0:
            self.respawn_not_before = max(self.respawn_not_before, now + delay_s)
            log.warning("child_respawn_delayed", worker_number=worker_number, delay_s=delay_s, recent_exits=self.early_exits)

    def reconcile_children(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.stop_deadline is not None and child.kill_reason is None and now >= child.stop_deadline:
                reason = f"did not stop within the graceful timeout of {self.config.graceful_timeout_s:g} s"
                self.kill_child(child, reason, level="warning")
        if self.phase in (Phase.STOPPING, Phase.STOPPING_NOW):
            return
        current = sorted(self.current_children(), key=lambda child: child.worker_number)
        for surplus in current[self.wanted :]:  # after TTOU: the highest numbers go
            self.ask_to_stop(surplus, now + self.config.graceful_timeout_s)
        missing = self.wanted - len(current)
        if missing > 0 and now >= self.respawn_not_before:
            taken = {child.worker_number for child in current}
            free = [number for number in range(1, self.wanted + 1) if number not in taken]
            for worker_number in free[:missing]:
                self.spawn(worker_number, now)

    def current_children(self) -> list[Child]:
        """Children of the current generation that are neither stopping nor being killed."""
        children = self.children.values()
        return [c for c in children if c.generation == self.generation and not c.is_stopping and c.kill_reason is None]

    # -- the database -------------------------------------------------------------------------

    def heartbeat_check_due(self) -> bool:
        return time.monotonic() >= max(self.next_heartbeat_check, self.database.retry_at)

    def check_heartbeats(self) -> None:
        self.next_heartbeat_check = time.monotonic() + self.config.heartbeat_interval_s
        self.with_database(self._check_heartbeats_now)

    def _check_heartbeats_now(self) -> None:
        workers = self.store.list_workers()
        now = time.monotonic()
        timeout_s = self.config.heartbeat_timeout_s
        heartbeats = health.match_heartbeats(self.children, workers, self.hostname)
        self.children = health.note_heartbeats(self.children, heartbeats, now, timeout_s)
        verdicts = health.find_hung_children(self.children.values(), heartbeats, now, timeout_s)
        verdicts += health.find_overrunning_children(self.children.values(), heartbeats, self.app.task_timeouts_s)
        for verdict in verdicts:
            child = self.children[verdict.pid]
            if child.kill_reason is None:
                self.kill_child(child, verdict.reason)
        # Our own children first, so their jobs carry the precise reason, then other hosts'.
        self._reclaim_pending_now()
        self.log_reclaimed(self.store.reclaim_stale_workers(timeout_s), f"no heartbeat for {timeout_s:g} s")

    def prune_due(self) -> bool:
        due_at = max(self.next_prune_at, self.database.retry_at)
        return self.config.retention_s is not None and time.monotonic() >= due_at

    def prune_finished_jobs(self) -> None:
        self.next_prune_at = time.monotonic() + PRUNE_INTERVAL_S
        self.with_database(self._prune_now)

    def _prune_now(self) -> None:
        assert self.config.retention_s is not None
        # One batch per turn of the loop, its own short transaction: reaping never waits long.
        if retention.prune_in_batches(self.store, self.config.retention_s, max_batches=1) >= retention.PRUNE_BATCH_SIZE:
            self.next_prune_at = time.monotonic() + PRUNE_CATCH_UP_S  # a full batch: more remain

    def queue_reclaim(self, child: Child, reason: str) -> None:
        self.pending_reclaims[child.pid] = PendingReclaim(child.pid, child.worker_id, reason)

    def reclaim_pending(self) -> None:
        if self.pending_reclaims:
            self.with_database(self._reclaim_pending_now)

    def _reclaim_pending_now(self) -> None:
        if not self.pending_reclaims:
            return
        unknown = [pending.pid for pending in self.pending_reclaims.values() if pending.worker_id is None]
        rows = health.match_heartbeats(unknown, self.store.list_workers(), self.hostname) if unknown else {}
        for pending in list(self.pending_reclaims.values()):
            row = rows.get(pending.pid)
            worker_id = pending.worker_id if row is None else row.worker_id
            if worker_id is not None:  # None: it died before registering, or it unregistered itself
                self.log_reclaimed(self.store.reclaim_jobs_of([worker_id], pending.reason), pending.reason)
            del self.pending_reclaims[pending.pid]

    def with_database(self, step: Callable[[], None]) -> None:
        """Runs a step that uses the database, unless it is backing off after a failure."""
        now = time.monotonic()
        if not self.database.is_due(now):
            return
        try:
            step()
        except DatabaseUnavailable as exc:
            if self.database.failed(now):
                log.error("database_unreachable", error=str(exc))  # once per outage
            return
        outage_s = self.database.succeeded(now)
        if outage_s is None:
            return
        log.info("database_reconnected", outage_s=round(outage_s, 1))
        if self.respawn_not_before > now:
            # Children were most likely dying of the outage: replace them now.
            self.respawn_not_before, self.early_exits = now, 0

    def log_reclaimed(self, reclaimed: Sequence[ReclaimedJob], reason: str) -> None:
        if not reclaimed:
            return
        job_ids = {status: [job.job_id for job in reclaimed if job.status is status] for status in (Status.TODO, Status.FAILED)}
        log.warning("jobs_reclaimed", job_ids=[job.job_id for job in reclaimed], worker_ids=sorted({job.worker_id for job in reclaimed}),
                    retried_job_ids=job_ids[Status.TODO] or None, failed_job_ids=job_ids[Status.FAILED] or None, reason=reason)  # fmt: skip

    # -- reporting ----------------------------------------------------------------------------

    def report(self) -> None:
        now = time.monotonic()
        is_stopping = self.phase in (Phase.STOPPING, Phase.STOPPING_NOW)
        workers = len(self.children) if is_stopping else len(self.current_children())
        title = proctitle.master_title(self.app.spec, workers, "stopping" if is_stopping else None)
        if title != self.title:
            proctitle.set_title(title)
            self.title = title
        status = self.status_line()
        if not is_stopping and (self.phase is Phase.RELOADING or not self.is_ready_sent):
            self.notifier.ready(status)  # children run (again): READY=1
            self.is_ready_sent = True
            self.phase = Phase.RUNNING
        else:
            self.notifier.status(status)
        interval_s = self.notifier.watchdog_interval_s
        if interval_s and now >= self.next_watchdog_at:
            self.notifier.watchdog()
            self.next_watchdog_at = now + interval_s

    def status_line(self) -> str:
        if self.phase in (Phase.STOPPING, Phase.STOPPING_NOW):
            return f"{self.phase.value}: {len(self.children)} workers left"
        line = f"{len(self.current_children())} of {self.wanted} workers running"
        if self.respawn_not_before > time.monotonic():
            line += ", respawn delayed"
        if self.database.down_since is not None:
            line += ", database unreachable"
        return line


def _nothing() -> None:
    pass
