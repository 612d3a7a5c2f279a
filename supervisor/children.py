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
from types import FrameType

import structlog

from cabbage import logconfig
from cabbage.exceptions import DatabaseUnavailable
from cabbage.heartbeat import HeartbeatThread
from cabbage.jobs import Job
from cabbage.store import JobStore
from cabbage.worker import Worker
from supervisor import exit_codes, proctitle, signals
from supervisor.app_import import LoadedApp
from supervisor.config import SupervisorConfig

log = structlog.get_logger()

# Signals a child leaves to its master: a terminal's Ctrl-C, Ctrl-\ and resize-like signals
# reach the whole process group, and TTIN/TTOU would otherwise stop a background child.
_LEFT_TO_MASTER = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@dataclasses.dataclass(frozen=True)
class Child:
    """One worker process of the master, as the master knows it. Times are ``time.monotonic()``."""

    pid: int
    worker_number: int  # its slot, 1..N
    generation: int  # bumped by each reload: older generations are retired
    started_at: float
    last_seen_at: float  # its start, then the last time the master saw a fresh heartbeat
    worker_id: int | None = None  # its row in cabbage_workers, once the master has seen it
    stop_deadline: float | None = None  # set when asked to stop (TERM): SIGKILL after it
    kill_reason: str | None = None  # set when the master SIGKILLed it: why, for its jobs' errors

    @property
    def is_stopping(self) -> bool:
        return self.stop_deadline is not None


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
    with signals.blocked() as mask:
        pid = os.fork()
        if pid == 0:
            status = exit_codes.CHILD_CRASHED
            try:
                status = _run_child(setup, worker_number, mask)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                # os._exit: the master's atexit hooks and finalizers are not the child's to run.
                os._exit(status)
    return Child(pid, worker_number, generation, started_at=now, last_seen_at=now)


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


def _run_child(setup: ChildSetup, worker_number: int, signal_mask: set[int]) -> int:
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
        return _work(setup, worker_number, stop)
    except DatabaseUnavailable as exc:
        # Exit rather than retry in place: the attempt in progress could not be recorded by
        # its owner, so the master reclaims it and starts a fresh worker, with backoff.
        log.error("database_unreachable", error=str(exc))
        return exit_codes.CHILD_DATABASE_UNAVAILABLE
    except BaseException as exc:  # the child's top: whatever escaped the worker loop
        log.error("worker_crashed", error_type=type(exc).__name__, error=str(exc), exc_info=exc)
        return exit_codes.CHILD_CRASHED


def _work(setup: ChildSetup, worker_number: int, stop: _StopRequest) -> int:
    config, task_manager = setup.config, setup.app.task_manager
    store = task_manager.store
    store.synchronous_commit = config.synchronous_commit
    worker_id = store.register_worker(hostname=setup.hostname, pid=os.getpid(), queues=config.queues)
    worker = Worker(
        task_manager, config.queues, worker_id=worker_id, batch_size=config.batch_size, hostname=setup.hostname
    )
    worker.on_job_started = lambda job: _show_running(worker_number, job)
    worker.on_job_finished = lambda job: proctitle.set_title(proctitle.idle_worker_title(worker_number))
    logconfig.bind_worker_context(worker_id=worker_id)
    heartbeat = HeartbeatThread(
        store,
        worker_id,
        config.heartbeat_interval_s,
        master_alive_fd=setup.master_alive_fd,
        on_master_lost=lambda: _exit_without_master(store.open_sibling(), worker_id),
        # Its jobs were taken back while it was frozen or cut off: stop now, not after the job.
        on_row_lost=lambda: _exit_now(exit_codes.CHILD_WORKER_LOST),
    )
    heartbeat.start()
    stop.attach(worker)
    try:
        worker.run(max_jobs=config.max_jobs_per_child)
    finally:
        heartbeat.stop()
    proctitle.set_title(proctitle.stopping_worker_title(worker_number))
    store.unregister_worker(worker_id)
    heartbeat.join()
    return exit_codes.CHILD_STOPPED


def _show_running(worker_number: int, job: Job) -> None:
    proctitle.set_title(proctitle.running_worker_title(worker_number, job.task_name, job.id))


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
