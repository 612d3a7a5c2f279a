"""Worker registration and the heartbeat thread that keeps a worker's row alive.

A worker is a row in the store's workers table. While it runs, a daemon thread with its own
store (its own connection) records a heartbeat every interval, so a long job keeps its worker
alive; a worker whose heartbeats stop is reclaimed by a supervisor (ARCHITECTURE invariant 4).
The same thread watches the master: the master holds the write end of a pipe, the child the
read end, and EOF on it means the master died. And it carries operators' aborts to the worker:
it listens for them on its connection (``JobStore.watch_aborts``) and looks on each heartbeat
too, in case a notification was lost with a connection.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Callable, Mapping, Sequence

import structlog

from cabbage.lease import Lease
from cabbage.store import AbortNotices, JobStore

# The defaults of every component that beats or judges heartbeats (the supervisor's
# --heartbeat-interval and --heartbeat-timeout, a worker that registers itself, /metrics).
DEFAULT_HEARTBEAT_INTERVAL_S = 5.0  # how often a worker records its heartbeat
DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0  # a worker silent for longer is hung or lost


def register_worker(store: JobStore, queues: Sequence[str] | None, hostname: str | None = None) -> int:
    """Adds this process as a worker of ``queues`` and returns its ``worker_id``."""
    return store.register_worker(hostname=hostname or socket.gethostname(), pid=os.getpid(), queues=queues)


class HeartbeatThread:
    """Records a worker's heartbeat every ``interval_s`` from a daemon thread, through ``store``:
    a store of its own (``open_sibling()``, a connection of its own), which it closes at the end.

    Each heartbeat the database accepts renews ``lease`` with the time it was sent.
    ``master_alive_fd`` is the read end of a pipe whose write end the master holds: its EOF
    means the master died, and ``on_master_lost`` is called at once (the supervisor passes a
    function that exits the process). ``on_row_lost`` is called when the worker's row is gone
    (it was reclaimed). Either ends the thread. When the store fails (an outage), the thread
    logs ``heartbeat_failed`` once, keeps trying every interval, and logs ``heartbeat_resumed``
    once one is accepted again. ``on_abort_requests`` is called with the worker's running jobs
    whose abort was requested (job id -> who asked), at each notification and each heartbeat
    that finds some.

    >>> heartbeat = HeartbeatThread(store.open_sibling(), worker_id, interval_s=5.0)
    >>> heartbeat.start()
    >>> ...
    >>> heartbeat.stop(); heartbeat.join()
    """

    def __init__(
        self,
        store: JobStore,
        worker_id: int,
        interval_s: float,
        *,
        lease: Lease | None = None,
        master_alive_fd: int | None = None,
        on_master_lost: Callable[[], None] | None = None,
        on_row_lost: Callable[[], None] | None = None,
        on_abort_requests: Callable[[Mapping[int, str | None]], None] | None = None,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.lease = lease
        self.master_alive_fd = master_alive_fd
        self.on_master_lost = on_master_lost
        self.on_row_lost = on_row_lost
        self.on_abort_requests = on_abort_requests
        self._abort_notices: AbortNotices | None = None
        # Threads do not inherit context variables: the thread logs through a logger bound
        # with what the starting thread had bound (role, worker_number) and its worker_id.
        self.log = structlog.get_logger().bind(**{**structlog.contextvars.get_contextvars(), "worker_id": worker_id})
        # stop() writes to this pipe, so one select() waits for the interval, the master's
        # death and a stop request at once.
        self._wakeup_read_fd, self._wakeup_write_fd = os.pipe()
        os.set_blocking(self._wakeup_write_fd, False)
        # Guards the pipe's closing, so that stop() never writes to a reused descriptor.
        self._pipe_lock = threading.Lock()
        self._pipe_closed = False
        self._failing_since: float | None = None  # the outage in progress, for its two log lines
        self._thread = threading.Thread(target=self._run, name=f"cabbage-heartbeat-{worker_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Asks the thread to end now; returns at once (see ``join``)."""
        with self._pipe_lock:
            if self._pipe_closed:
                return  # the thread has ended
            try:
                os.write(self._wakeup_write_fd, b"x")
            except BlockingIOError:
                pass  # the pipe is full of earlier stop requests: one is enough

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            if self.on_abort_requests is not None:
                self._abort_notices = self.store.watch_aborts(self.worker_id)
            while self._wait_interval() and self._beat(self.store):
                pass
        finally:
            if self._abort_notices is not None:
                self._abort_notices.close()
            self.store.close()  # its own: the caller passes a sibling store
            with self._pipe_lock:
                self._pipe_closed = True
                os.close(self._wakeup_read_fd)
                os.close(self._wakeup_write_fd)

    def _wait_interval(self) -> bool:
        """Waits one interval, passing on the aborts notified meanwhile; False when the thread
        must end (stop, or the master is gone)."""
        deadline = time.monotonic() + self.interval_s
        while True:
            watched = [self._wakeup_read_fd]
            if self.master_alive_fd is not None:
                watched.append(self.master_alive_fd)
            notices_fd = self._abort_notices_fd()
            if notices_fd is not None:
                watched.append(notices_fd)
            readable, _, _ = select.select(watched, [], [], max(0.0, deadline - time.monotonic()))
            if notices_fd is not None and notices_fd in readable:
                self._take_abort_notices()
            if not self._is_to_go_on(readable):
                return False
            if time.monotonic() >= deadline:
                return True

    def _abort_notices_fd(self) -> int | None:
        if self._abort_notices is None:
            return None
        try:
            return self._abort_notices.fileno()
        except Exception:  # a boundary: the heartbeats look for aborts anyway
            return None

    def _take_abort_notices(self) -> None:
        assert self._abort_notices is not None
        try:
            notified = self._abort_notices.take()
        except Exception:  # a boundary, as above
            return
        if notified:
            self._pass_on_aborts(self.store)

    def _pass_on_aborts(self, store: JobStore) -> None:
        """Hands the worker its running jobs whose abort was requested, if any."""
        if self.on_abort_requests is None:
            return
        try:
            requests = store.abort_requests_of(self.worker_id)
        except Exception:  # a boundary: an outage must not end the heartbeats; the next beat looks again
            return
        if requests:
            self.on_abort_requests(requests)

    def _is_to_go_on(self, readable: Sequence[int]) -> bool:
        """False when the thread must end: asked to stop, or its master is gone."""
        if self._wakeup_read_fd in readable:
            return False
        if self.master_alive_fd in readable and self._is_master_gone():
            self.log.error("master_lost", master_alive_fd=self.master_alive_fd)
            if self.on_master_lost is not None:
                self.on_master_lost()
            return False
        return True

    def _is_master_gone(self) -> bool:
        try:
            return os.read(self.master_alive_fd, 1) == b""  # type: ignore[arg-type]
        except BlockingIOError:
            return False
        except OSError:
            return True  # a pipe we can no longer read tells us nothing good about the master

    def _beat(self, store: JobStore) -> bool:
        """Records one heartbeat; False when the worker's row is gone and the thread must end."""
        sent_at = self.lease.clock() if self.lease is not None else time.monotonic()
        try:
            is_registered = store.record_heartbeat(self.worker_id)
        except Exception as exc:  # a boundary: an outage must not end the heartbeats
            if self._failing_since is None:
                self._failing_since = sent_at
                self.log.warning("heartbeat_failed", error_type=type(exc).__name__, error=str(exc))
            return True
        if self._failing_since is not None:
            self.log.info("heartbeat_resumed", failing_s=round(sent_at - self._failing_since, 2))
            self._failing_since = None
        if is_registered:
            if self.lease is not None:
                self.lease.renew(sent_at)
            self._pass_on_aborts(store)
            return True
        self.log.warning("worker_reclaimed", reason="the worker's row is gone: its jobs were taken back")
        if self.on_row_lost is not None:
            self.on_row_lost()
        return False
