"""The master's children: Child records; spawning, signalling and reaping them; the child's entry point.

This is the only module of the supervisor that calls ``os.fork``, ``os.kill`` and
``os.waitpid``. A child, right after fork: closes the master's descriptors (its wake-up pipe,
its copy of the master-alive pipe's write end), installs its own signal handlers and only then
unblocks signals, clears the log context it inherited and binds its own, registers a worker
row over a connection of its own (the store drops the inherited one by pid), heartbeats from a
thread that also watches the master, and runs the Worker loop until told to stop. Its exit
status (``exit_codes.CHILD_*``) tells the master what happened.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from types import FrameType
from typing import Sequence

import structlog

from cabbage import logconfig, outages
from cabbage.exceptions import ConnectionSlotsExhausted, DatabaseUnavailable
from cabbage.heartbeat import HeartbeatThread
from cabbage.jobs import Job
from cabbage.lease import Lease, margin_for
from cabbage.store import JobStore
from cabbage.attempts import is_async
from cabbage.worker import Worker
from supervisor import exit_codes, proctitle, reports, signals
from supervisor.app_import import LoadedApp
from supervisor.config import SupervisorConfig

log = structlog.get_logger()

# How a child's two sessions are named in pg_stat_activity (the master's: supervisor.cli).
WORKER_SESSION_NAME = "cabbage-worker"
HEARTBEAT_SESSION_NAME = "cabbage-heartbeat"

# An async task is cancelled by its child at its timeout; its master kills the child only if the
# task has not given way this long after (a coroutine that blocks its event loop).
ASYNC_CANCEL_GRACE_S = 5.0

# Registration rides out an outage with these delays; a server without a free connection slot
# is tried CONNECTION_SLOT_TRIES times, then the child exits and its master respawns it later.
REGISTER_FIRST_DELAY_S = 0.2
REGISTER_MAX_DELAY_S = 5.0
CONNECTION_SLOT_TRIES = 4
# How long a stopping child keeps trying to unregister through an outage.
UNREGISTER_PATIENCE_S = 5.0

# Signals a child leaves to its master: a terminal's Ctrl-C, Ctrl-\ and resize-like signals
# reach the whole process group, and TTIN/TTOU would otherwise stop a background child.
_LEFT_TO_MASTER = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@dataclasses.dataclass(frozen=True)
class RunningJob:
    """A job a child reported started and not yet finished."""

    job_id: int
    task_name: str
    started_at: float
    timeout_s: float | None
    abort_requested_at: float | None = None  # when the child told the task of an abort
    aborted_by: str | None = None

    @property
    def deadline(self) -> float | None:
        return None if self.timeout_s is None else self.started_at + self.timeout_s


@dataclasses.dataclass(frozen=True)
class Child:
    """One worker process of the master, as the master knows it. Times are ``time.monotonic()``."""

    pid: int
    worker_number: int  # its slot, 1..N
    generation: int  # bumped by each reload: older generations are retired
    started_at: float
    # Its start, then when the last heartbeat the database accepted was sent (its reports).
    last_seen_at: float
    report_fd: int = -1  # the read end of its report pipe (supervisor.reports)
    worker_id: int | None = None  # its row in cabbage_workers, once it reported registering
    running: tuple[RunningJob, ...] = ()
    # Jobs it holds started but has not begun (--prefetch): given back unused if it dies.
    prefetched: frozenset[int] = frozenset()
    overran: tuple[int, ...] = ()  # jobs it reported past their timeout, with no thread to stop them
    stop_deadline: float | None = None  # set when asked to stop (TERM): SIGKILL after it
    kill_reason: str | None = None  # set when the master SIGKILLed it: why, for its jobs' errors

    @property
    def is_stopping(self) -> bool:
        return self.stop_deadline is not None

    def noting(self, report: reports.Report) -> "Child":
        """This child once ``report`` is taken into account."""
        if isinstance(report, reports.Registered):
            return dataclasses.replace(self, worker_id=report.worker_id, last_seen_at=max(self.last_seen_at, report.sent_at))
        if isinstance(report, reports.HeartbeatAccepted):
            return dataclasses.replace(self, last_seen_at=max(self.last_seen_at, report.sent_at))
        if isinstance(report, reports.JobsOverran):
            return dataclasses.replace(self, overran=(*self.overran, *report.job_ids))
        if isinstance(report, reports.JobStarted):
            job = RunningJob(report.job_id, report.task_name, report.started_at, report.timeout_s)
            return dataclasses.replace(self, running=(*self.running, job), prefetched=self.prefetched - {report.job_id})
        if isinstance(report, reports.JobsStarted):
            jobs = [RunningJob(job.job_id, job.task_name, job.started_at, job.timeout_s) for job in report.jobs]
            begun = self.prefetched - {job.job_id for job in jobs} if self.prefetched else self.prefetched
            return dataclasses.replace(self, running=(*self.running, *jobs), prefetched=begun)
        if isinstance(report, reports.JobsPrefetched):
            return dataclasses.replace(self, prefetched=self.prefetched | set(report.job_ids))
        if isinstance(report, reports.JobsFinished):
            ended = set(report.job_ids)
            return dataclasses.replace(self, running=tuple(job for job in self.running if job.job_id not in ended))
        if isinstance(report, reports.AbortRequested):
            running = tuple(
                dataclasses.replace(job, abort_requested_at=report.requested_at, aborted_by=report.aborted_by)
                if job.job_id == report.job_id and job.abort_requested_at is None else job
                for job in self.running
            )  # fmt: skip
            return dataclasses.replace(self, running=running)
        return dataclasses.replace(self, running=tuple(job for job in self.running if job.job_id != report.job_id))


@dataclasses.dataclass(frozen=True)
class ExitStatus:
    """How a reaped child ended: an exit code or the signal that killed it."""

    pid: int
    exit_code: int | None
    signal_name: str | None

    @classmethod
    def from_wait_status(cls, pid: int, status: int) -> "ExitStatus":
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return cls(pid, None, signals.name_of(-code))
        return cls(pid, code, None)

    @property
    def is_clean(self) -> bool:
        return self.exit_code == exit_codes.CHILD_STOPPED

    def describe(self) -> str:
        """``process 1234 exited with status 3`` or ``process 1234 was killed by signal SIGKILL``."""
        if self.signal_name is not None:
            return f"process {self.pid} was killed by signal {self.signal_name}"
        meaning = exit_codes.CHILD_STATUS_MEANINGS.get(self.exit_code)  # type: ignore[arg-type]
        detail = f" ({meaning})" if meaning else ""
        return f"process {self.pid} exited with status {self.exit_code}{detail}"


@dataclasses.dataclass(frozen=True)
class ChildSetup:
    """What a child takes from its master at fork time."""

    config: SupervisorConfig
    app: LoadedApp
    hostname: str
    master_alive_fd: int  # the read end; EOF means the master died
    master_fds: tuple[int, ...]  # the master's own descriptors, closed at once in the child
    signal_intake: signals.SignalIntake


# -- the master's side -----------------------------------------------------------------------


def spawn_child(setup: ChildSetup, worker_number: int, generation: int, now: float) -> Child:
    """Forks a worker process; raises OSError when the system refuses a new process."""
    # Unflushed output would be written twice, once by each process.
    sys.stdout.flush()
    sys.stderr.flush()
    report_read_fd, report_write_fd = os.pipe()
    with signals.blocked() as mask:
        try:
            pid = os.fork()
        except OSError:
            os.close(report_read_fd)
            os.close(report_write_fd)
            raise
        if pid == 0:
            status = exit_codes.CHILD_CRASHED
            try:
                os.close(report_read_fd)
                status = _run_child(setup, worker_number, mask, reports.ReportWriter(report_write_fd))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                # os._exit: the master's atexit hooks and finalizers are not the child's to run.
                os._exit(status)
    os.close(report_write_fd)
    return Child(pid, worker_number, generation, started_at=now, last_seen_at=now, report_fd=report_read_fd)


def signal_child(child: Child, signum: int) -> None:
    """Sends a signal to a child the master has not reaped yet, so its pid cannot be reused."""
    try:
        os.kill(child.pid, signum)
    except ProcessLookupError:
        pass  # cannot happen to an unreaped child; the reap that follows tells the story


def reap_children() -> list[ExitStatus]:
    """Every child that has exited since the last call (``waitpid(-1, WNOHANG)`` until empty)."""
    exited = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break  # no child at all
        if pid == 0:
            break  # children remain, none has exited
        exited.append(ExitStatus.from_wait_status(pid, status))
    return exited


# -- the child's side ------------------------------------------------------------------------


class _StopRequest:
    """The child's SIGTERM handler: stop the worker after its current job (or before it starts)."""

    def __init__(self) -> None:
        self.is_requested = False
        self.worker: Worker | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.is_requested = True
        if self.worker is not None:
            self.worker.stop()  # a flag and a pipe write: safe in a handler

    def attach(self, worker: Worker) -> None:
        self.worker = worker
        if self.is_requested:
            worker.stop()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Not SIG_IGN: an ignored disposition would be inherited by programs a task runs."""


def _run_child(setup: ChildSetup, worker_number: int, signal_mask: set[int], reporter: reports.ReportWriter) -> int:
    setup.signal_intake.close_in_child()
    for fd in setup.master_fds:
        os.close(fd)
    stop = _StopRequest()
    signal.signal(signal.SIGTERM, stop.handle)
    for signum in _LEFT_TO_MASTER:
        signal.signal(signum, _ignore)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a task's subprocesses are its own to reap
    signals.restore_mask(signal_mask)  # only now: our handlers are in place
    logconfig.clear_context()
    logconfig.bind_worker_context(role="worker", worker_number=worker_number)
    proctitle.set_title(proctitle.idle_worker_title(worker_number))
    try:
        return _work(setup, worker_number, stop, reporter)
    except ConnectionSlotsExhausted:
        # Nothing logged here: the master logs the limit and what to do once for all its
        # children, and respawns them with growing delays.
        return exit_codes.CHILD_NO_CONNECTION_SLOT
    except DatabaseUnavailable as exc:  # not from the loop, which rides outages out: a bug
        log.error("database_unreachable", error=str(exc))
        return exit_codes.CHILD_DATABASE_UNAVAILABLE
    except BaseException as exc:  # the child's top: whatever escaped the worker loop
        log.error("worker_crashed", error_type=type(exc).__name__, error=str(exc), exc_info=exc)
        return exit_codes.CHILD_CRASHED


def _work(setup: ChildSetup, worker_number: int, stop: _StopRequest, reporter: reports.ReportWriter) -> int:
    config, task_manager = setup.config, setup.app.task_manager
    store = task_manager.store
    store.synchronous_commit = config.synchronous_commit
    store.application_name = WORKER_SESSION_NAME
    heartbeat_store = store.open_sibling()
    heartbeat_store.application_name = HEARTBEAT_SESSION_NAME
    registered = _register(store, heartbeat_store, setup, stop)
    if registered is None:
        return exit_codes.CHILD_STOPPED  # told to stop before the database answered
    worker_id, sent_at = registered
    reporter.send(reports.Registered(worker_id, sent_at))
    margin_s = margin_for(config.heartbeat_interval_s, config.heartbeat_timeout_s)
    lease = Lease(config.heartbeat_timeout_s, margin_s, on_renewed=lambda at: reporter.send(reports.HeartbeatAccepted(at)))
    lease.renew(sent_at)
    worker = Worker(
        task_manager, config.queues, concurrency=config.concurrency, worker_id=worker_id, lease=lease,
        batch_size=config.batch_size, prefetch=config.prefetch, hostname=setup.hostname, poll_interval_s=config.poll_interval_s,
        stop_on_keyboard_interrupt=False,  # Ctrl-C is the master's, not ours
    )  # fmt: skip
    worker.on_job_started = lambda job: _on_job_started(worker_number, worker, job, setup.config, reporter)
    # Reported when the task returns, not once its outcome is recorded: what the lease and the
    # timeout protect is the task running, and an outcome waiting out an outage runs nothing.
    worker.on_task_returned = lambda job: _report(worker, reporter, reports.JobFinished(job.id))
    if worker.runs_inline:
        worker.on_job_finished = lambda job: _show_state(worker_number, worker)
    else:
        # Many jobs at once: their reports go in one write, the title changes once, per batch.
        worker.on_batch_end = lambda: _end_batch(worker_number, worker, reporter)
        # Each written before a prefetched job may begin (the pipe's writes block): on our death,
        # the master gives back unused only the jobs it knows never began.
        worker.on_jobs_prefetched = lambda jobs: reporter.gather(reports.JobsPrefetched([job.id for job in jobs]))
    worker.on_overrun = lambda jobs: _exit_for_overrun(jobs, reporter)
    worker.on_abort_requested = lambda job, aborted_by: reporter.send(
        reports.AbortRequested(job.id, time.monotonic(), aborted_by)
    )
    logconfig.bind_worker_context(worker_id=worker_id)
    heartbeat = HeartbeatThread(
        heartbeat_store,
        worker_id,
        config.heartbeat_interval_s,
        lease=lease,
        master_alive_fd=setup.master_alive_fd,
        on_master_lost=lambda: _exit_without_master(store.open_sibling(), worker_id),
        # Its jobs were taken back while it was frozen or cut off: stop now, not after the job.
        on_row_lost=lambda: _exit_now(exit_codes.CHILD_WORKER_LOST),
        on_abort_requests=worker.request_aborts,
    )
    heartbeat.start()
    stop.attach(worker)
    try:
        worker.run(max_jobs=config.max_jobs_per_child)
    finally:
        heartbeat.stop()
    proctitle.set_title(proctitle.stopping_worker_title(worker_number))
    _unregister(store, worker_id)
    heartbeat.join()
    return exit_codes.CHILD_STOPPED


def _register(store: JobStore, heartbeat_store: JobStore, setup: ChildSetup, stop: _StopRequest) -> tuple[int, float] | None:
    """Registers the worker and proves the heartbeat connection too, riding out an outage; the
    worker id and when its registration (its first heartbeat) was sent. None when told to stop
    first. A server with no connection slot left is tried a few times, then given up:
    ConnectionSlotsExhausted (the master respawns with growing delays)."""
    outage = outages.Outage(log, during="registration")
    backoff = outages.Backoff(first_s=REGISTER_FIRST_DELAY_S, max_s=REGISTER_MAX_DELAY_S)
    refusals = 0
    worker_id: int | None = None
    while not stop.is_requested:
        sent_at = time.monotonic()
        try:
            if worker_id is None:
                worker_id = store.register_worker(hostname=setup.hostname, pid=os.getpid(), queues=setup.config.queues)
            heartbeat_store.record_heartbeat(worker_id)
        except ConnectionSlotsExhausted:
            refusals += 1  # not an outage to log: the master reports the limit if we give up
            if refusals >= CONNECTION_SLOT_TRIES:
                raise
        except DatabaseUnavailable as exc:
            outage.failed(exc)
        else:
            outage.succeeded()
            return worker_id, sent_at
        _sleep_unless_stopped(backoff.next_delay_s(), stop)
    return None


def _sleep_unless_stopped(delay_s: float, stop: _StopRequest) -> None:
    deadline = time.monotonic() + delay_s
    while not stop.is_requested and time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _unregister(store: JobStore, worker_id: int) -> None:
    """Unregisters, trying through an outage for a while; its master reclaims what is left after."""
    deadline = time.monotonic() + UNREGISTER_PATIENCE_S
    try:
        outages.until_it_answers(
            lambda: store.unregister_worker(worker_id),
            outages.Outage(log, during="unregistration"),
            should_give_up=lambda: time.monotonic() >= deadline,
        )
    except DatabaseUnavailable as exc:
        log.warning("worker_unregister_failed", error=str(exc))


def _on_job_started(worker_number: int, worker: Worker, job: Job, config: SupervisorConfig, reporter: reports.ReportWriter) -> None:
    _report(worker, reporter, reports.JobStarted(job.id, job.task_name, time.monotonic(), _deadline_for_master(worker, job, config)))
    if worker.runs_inline:
        proctitle.set_title(proctitle.running_worker_title(worker_number, job.task_name, job.id))


def _report(worker: Worker, reporter: reports.ReportWriter, report: reports.Report) -> None:
    """At once when the child runs its jobs inline (the task runs in this very thread next);
    else, gathered until the worker's batch ends (``_end_batch``)."""
    if worker.runs_inline:
        reporter.send(report)
    else:
        reporter.gather(report)


def _end_batch(worker_number: int, worker: Worker, reporter: reports.ReportWriter) -> None:
    reporter.flush()
    _show_state(worker_number, worker)


def _deadline_for_master(worker: Worker, job: Job, config: SupervisorConfig) -> float | None:
    """When the master kills the child for this job: at its task's timeout when the job runs in
    the child's own thread; an async task is cancelled by the child itself at its timeout, and a
    threaded one makes the child stop and exit once its other jobs are recorded, so for those the
    master's deadline is a backstop, later by the time that takes."""
    task = worker.task_manager.tasks.get(job.task_name)
    if task is None or task.timeout_s is None:
        return None
    if is_async(worker.task_manager, job):
        return task.timeout_s + ASYNC_CANCEL_GRACE_S
    if not worker.runs_inline:
        return task.timeout_s + config.graceful_timeout_s
    return task.timeout_s


def _show_state(worker_number: int, worker: Worker) -> None:
    running = worker.running_count
    if running == 0:
        proctitle.set_title(proctitle.idle_worker_title(worker_number))
    elif not worker.runs_inline:
        proctitle.set_title(proctitle.busy_worker_title(worker_number, running, worker.concurrency))


def _exit_for_overrun(jobs: Sequence[Job], reporter: reports.ReportWriter) -> None:
    """Only threads past their timeout are left: tell the master which jobs, then exit; the
    threads end with the process, and the master reclaims their jobs."""
    reporter.send(reports.JobsOverran([job.id for job in jobs]))
    _exit_now(exit_codes.CHILD_TASK_TIMED_OUT)


def _exit_without_master(store: JobStore, worker_id: int) -> None:
    """Called by the heartbeat thread when the master died: give the job back, then exit."""
    reason = f"process {os.getpid()} stopped because its master died"
    try:
        store.reclaim_jobs_of([worker_id], reason)
    except Exception as exc:  # the database may be what killed the master; a stale reclaim will do
        log.warning("jobs_reclaim_failed", worker_id=worker_id, error=str(exc))
    _exit_now(exit_codes.CHILD_MASTER_LOST)


def _exit_now(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
