"""The master loop of cabbage-supervisor: wait, then reconcile. No SQL, no os.fork.

The master's state is plain data: ``children`` (pid -> Child), ``wanted`` (how many workers),
``generation`` (bumped by each reload) and ``phase``. Signals only record an intent
(``handle_signal``, decided by ``phases.decide_signal``); each turn of the loop then reaps,
checks heartbeats when due, and spawns or retires children toward what is wanted. Decisions
are in ``phases`` and ``health``, processes in ``children``, the database in
``database_duties``. When the database is unreachable the master keeps reaping and respawning.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import time

import structlog

from cabbage.exceptions import AppImportError
from cabbage.lease import margin_for
from cabbage.store import JobStore
from supervisor import app_import, children, exit_codes, health, proctitle, reports, signals
from supervisor.app_import import LoadedApp
from supervisor.children import Child, ChildSetup, ExitStatus
from supervisor.config import SupervisorConfig
from supervisor.database_duties import DatabaseDuties
from supervisor.phases import Intent, Phase, decide_signal
from supervisor.reports import ReportReader
from supervisor.systemd import SystemdNotifier

log = structlog.get_logger()

# The longest the loop sleeps with nothing due: a safety net, not a schedule. Every wake-up of
# an idle master costs CPU (its pages are cold by then): it wakes for what is due (heartbeat
# checks, deadlines, respawns, the watchdog, pruning), for signals and for dead children.
MAX_TICK_S = 5.0
# After it read its children's reports, the loop waits this long before a report alone wakes it
# again: busy children send two per job (thousands a second), and a loop turn per report would
# cost the master a core. Deadlines, signals and dead children still wake it at once, and the
# reports carry their children's own times, so nothing the master decides comes later for it.
REPORTS_GATHERED_S = 0.02


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
        self.database = DatabaseDuties(store, self.hostname, config)
        self.early_exits = 0  # children that died young in a row (health.count_early_exits)
        self.respawn_not_before = 0.0
        self.next_watchdog_at = 0.0
        self.next_reports_read_at = 0.0
        self.is_ready_sent = False
        # READY=1 waits for the children to register, but not past this moment (set at start
        # and at each reload): a child stuck connecting must not keep systemd waiting for ever.
        self.ready_deadline = 0.0
        self.readers: dict[int, ReportReader] = {}  # pid -> its report pipe
        self.margin_s = margin_for(config.heartbeat_interval_s, config.heartbeat_timeout_s)
        self.title = ""

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self.signals.install()
        self.database.start()
        self.start_children()
        while not self.finished:
            until_reports_s = self.next_reports_read_at - time.monotonic()
            if until_reports_s > 0:  # gathering: the reports are read when this is over
                self.signals.wait(timeout_s=min(self.tick_s, until_reports_s), also_readable=())
            else:
                self.signals.wait(timeout_s=self.tick_s, also_readable=self.report_fds())
            try:
                for signum in self.signals.drain():
                    self.handle_signal(signum)  # records an intent: stop, stop now, reload, +1, -1
                self.read_reports()  # what children said: registered, heartbeats, jobs begun and ended
                self.reap_children()  # waitpid(-1, WNOHANG) until empty; reclaim at once
                self.kill_children_due()  # job timeouts, leases about to end, hung children
                self.database.set_live_worker_ids(self.live_worker_ids())  # its thread reclaims the rest
                if self.database.take_reconnected():
                    self.respawn_now()  # children were most likely dying of the outage
                self.reconcile_children()  # spawn or retire toward the wanted count
                # Its thread defers the due ticks, once across hosts.
                self.database.set_periodic_app(self.app.task_manager)
                self.report()  # process title, sd_notify STATUS / WATCHDOG
            except Exception:  # the loop's boundary: a failed step must not orphan the children
                log.exception("supervisor_step_failed")
                self.signals.wait(timeout_s=MAX_TICK_S)
        self.finish()
        return self.exit_code

    @property
    def finished(self) -> bool:
        return self.phase.is_stopping and not self.children

    @property
    def tick_s(self) -> float:
        """How long the loop may sleep: until the next thing due, at most MAX_TICK_S."""
        now = time.monotonic()
        due = [self.respawn_not_before]
        if self.notifier.watchdog_interval_s:
            due.append(self.next_watchdog_at)
        alive = [child for child in self.children.values() if child.kill_reason is None]
        due += [child.stop_deadline for child in alive if child.stop_deadline]
        config = self.config
        due.append(health.next_kill_deadline(alive, config.heartbeat_timeout_s, self.margin_s, config.abort_timeout_s))
        due += [child.last_seen_at + self.config.heartbeat_timeout_s for child in alive]  # hung, if silent
        if not self.is_ready_sent or self.phase is Phase.RELOADING:
            due.append(self.ready_deadline)
        upcoming = [moment for moment in due if moment > now]
        return min(MAX_TICK_S, min(upcoming, default=math.inf) - now)

    def start_children(self) -> None:
        config = self.config
        log.info("supervisor_started", app=self.app.spec, workers=self.wanted, queues=config.queues,
                 heartbeat_interval_s=config.heartbeat_interval_s, heartbeat_timeout_s=config.heartbeat_timeout_s)  # fmt: skip
        now = time.monotonic()
        self.ready_deadline = now + config.heartbeat_timeout_s
        for worker_number in range(1, self.wanted + 1):
            self.spawn(worker_number, now)
        if not self.children:
            log.critical("supervisor_stopping", mode="fast", reason="no worker process could be started")
            self.exit_code = exit_codes.EXIT_CHILDREN_FAILED
            self.phase = Phase.STOPPING

    def finish(self) -> None:
        self.database.close()
        unreclaimed = self.database.pending_pids or None
        log.info("supervisor_stopped", exit_code=self.exit_code, unreclaimed_pids=unreclaimed)
        self.notifier.close()
        os.close(self.master_alive_read_fd)
        os.close(self.master_alive_write_fd)

    # -- signals ----------------------------------------------------------------------------

    def handle_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # reap_children runs right after
        decision = decide_signal(signum, self.phase, self.wanted)
        self.wanted = decision.wanted  # TTIN, TTOU: reconcile_children spawns or retires toward it
        log.info("signal_received", signal=signals.name_of(signum), effect=decision.effect, workers=self.wanted)
        if decision.intent is Intent.STOP_GRACEFULLY:
            self.stop_gracefully()
        elif decision.intent is Intent.STOP_NOW:
            self.stop_now(signals.name_of(signum))
        elif decision.intent is Intent.RELOAD:
            self.reload()

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
        self.ready_deadline = time.monotonic() + self.config.heartbeat_timeout_s
        self.ask_all_to_stop()  # the new generation is spawned by reconcile_children

    # -- children ---------------------------------------------------------------------------

    def spawn(self, worker_number: int, now: float) -> None:
        # The child closes every descriptor of ours: the master-alive pipe's write end, and the
        # report pipes of its brothers (an inherited one would keep a dead brother's pipe open).
        master_fds = (self.master_alive_write_fd, *self.report_fds())
        setup = ChildSetup(self.config, self.app, self.hostname, master_alive_fd=self.master_alive_read_fd,
                           master_fds=master_fds, signal_intake=self.signals)  # fmt: skip
        try:
            child = children.spawn_child(setup, worker_number, self.generation, now)
        except OSError as exc:  # fork refused: process or memory limits
            log.error("worker_spawn_failed", worker_number=worker_number, error=str(exc))
            self.delay_respawn(now, lifetime_s=0.0, worker_number=worker_number)
            return
        self.children[child.pid] = child
        self.readers[child.pid] = ReportReader(child.report_fd)

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
        # Its jobs are reclaimed once it is reaped: never while its task might still run.

    def reap_children(self) -> None:
        for exited in children.reap_children():
            if exited.pid in self.readers:
                self.read_reports_of(exited.pid)  # its last words: the job it finished, say
                self.readers.pop(exited.pid).close()
            child = self.children.pop(exited.pid, None)
            if child is not None:
                self.on_child_exit(child, exited)

    def on_child_exit(self, child: Child, exited: ExitStatus) -> None:
        now = time.monotonic()
        lifetime_s = now - child.started_at
        timed_out = exited.exit_code == exit_codes.CHILD_TASK_TIMED_OUT and bool(child.overran)
        is_expected = exited.is_clean or child.is_stopping or child.kill_reason is not None or timed_out
        outcome = {"signal": exited.signal_name} if exited.signal_name else {"exit_code": exited.exit_code}
        (log.info if is_expected else log.warning)("worker_exited", child_pid=child.pid, worker_number=child.worker_number,
                                                   worker_id=child.worker_id, lifetime_s=round(lifetime_s, 1),
                                                   reason=child.kill_reason or exited.describe(), **outcome)  # fmt: skip
        # Even after a clean exit: a task that called sys.exit(0) left its job doing.
        reason = f"process {child.pid} was killed: {child.kill_reason}" if child.kill_reason else exited.describe()
        if timed_out:
            reason = overrun_reason(child, now)
        self.database.queue_reclaim(child.pid, child.worker_id, reason, never_begun=child.prefetched)
        if exited.exit_code == exit_codes.CHILD_NO_CONNECTION_SLOT:
            self.database.note_connection_slots_exhausted(self.wanted)
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
        if self.phase.is_stopping:
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

    def live_worker_ids(self) -> list[int]:
        """The workers of our children that are not being killed: ours to judge, not the database's."""
        return [child.worker_id for child in self.children.values() if child.worker_id is not None and child.kill_reason is None]

    def running_children(self) -> list[Child]:
        """Current children that registered their worker: they take jobs."""
        return [child for child in self.current_children() if child.worker_id is not None]

    def current_children(self) -> list[Child]:
        """Children of the current generation that are neither stopping nor being killed."""
        children = self.children.values()
        return [c for c in children if c.generation == self.generation and not c.is_stopping and c.kill_reason is None]

    # -- what children report ------------------------------------------------------------------

    def report_fds(self) -> list[int]:
        return [reader.fd for reader in self.readers.values() if not reader.at_end]

    def read_reports(self) -> None:
        if sum(self.read_reports_of(pid) for pid in list(self.readers)):
            self.next_reports_read_at = time.monotonic() + REPORTS_GATHERED_S

    def read_reports_of(self, pid: int) -> int:
        """Takes in what the child reported; how many reports."""
        received = self.readers[pid].read()
        for report in received:
            child = self.children.get(pid)
            if child is None:
                break
            self.children[pid] = child.noting(report)
            if isinstance(report, reports.Registered) and len(self.running_children()) >= self.wanted:
                self.database.note_all_registered()
        return len(received)

    def kill_children_due(self) -> None:
        """Kills our children whose job overran its timeout or its abort timeout, whose lease is
        about to end (a heartbeat the database accepted is too long ago while they run a job), or
        that are hung; their jobs are reclaimed once the database answers."""
        verdicts = health.find_children_to_kill(
            self.children.values(), time.monotonic(), self.config.heartbeat_timeout_s, self.margin_s,
            # Heard within two checks: else its silence may be the database's, not the child's.
            database_reachable=self.database.has_answered_within(2 * self.config.heartbeat_interval_s),
            abort_timeout_s=self.config.abort_timeout_s,
        )  # fmt: skip
        for verdict in verdicts:
            self.kill_child(self.children[verdict.pid], verdict.reason)

    def respawn_now(self) -> None:
        """After an outage: children were most likely dying of it, so replace them without delay."""
        now = time.monotonic()
        if self.respawn_not_before > now:
            self.respawn_not_before, self.early_exits = now, 0

    # -- reporting ----------------------------------------------------------------------------

    def report(self) -> None:
        now = time.monotonic()
        is_stopping = self.phase.is_stopping
        running = self.running_children()
        is_starting = not is_stopping and (self.phase is Phase.RELOADING or not self.is_ready_sent)
        becomes_ready = is_starting and (len(running) >= self.wanted or now >= self.ready_deadline)
        if becomes_ready:
            self.is_ready_sent = True
            self.phase = Phase.RUNNING
        # The title first: by the time systemd (or anyone) hears READY=1, ps shows it too.
        workers = len(self.children) if is_stopping else len(running)
        note = "stopping" if is_stopping else "starting" if is_starting and not becomes_ready else None
        title = proctitle.master_title(self.app.spec, workers, note)
        if title != self.title:
            proctitle.set_title(title)
            self.title = title
        status = self.status_line()
        if becomes_ready:
            self.notifier.ready(status)  # children run (again): READY=1
        else:
            self.notifier.status(status)
        interval_s = self.notifier.watchdog_interval_s
        if interval_s and now >= self.next_watchdog_at:
            self.notifier.watchdog()
            self.next_watchdog_at = now + interval_s

    def status_line(self) -> str:
        if self.phase.is_stopping:
            return f"{self.phase.value}: {len(self.children)} workers left"
        line = f"{len(self.running_children())} of {self.wanted} workers running"
        if self.respawn_not_before > time.monotonic():
            line += ", respawn delayed"
        if self.database.is_down:
            line += ", database unreachable"
        return line


def overrun_reason(child: Child, now: float) -> str:
    """Why the jobs of a child that exited for threads past their timeout were taken back."""
    jobs = [job for job in child.running if job.job_id in child.overran]
    described = ", ".join(f"job {job.job_id} ({job.task_name}) ran {now - job.started_at:.1f} s" for job in jobs) or "a job"
    return f"{described}, past its task's timeout: a thread cannot be stopped, so process {child.pid} was replaced"

