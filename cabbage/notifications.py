"""LISTEN/NOTIFY for idle workers: subscribing a connection, waiting for a job of the wanted
queues, and the self-pipe that ends a wait early; and the abort requests a worker's heartbeat
connection listens for.

Defers send ``NOTIFY cabbage_jobs, '<queue>'`` for jobs that head their line (sql/jobs.sql); an
operator's abort sends ``NOTIFY cabbage_aborts, '<worker id>'`` (sql/admin.sql). A
PostgreSQL store keeps one ``Listener`` for its own connection: LISTEN is sent on the first
wait of each connection, so a store that reconnected listens again before it next waits.
Driver errors are left to the store, which turns them into cabbage errors.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import time
import weakref
from typing import Any, Sequence

from cabbage.sql import queries

NOTIFY_CHANNEL = "cabbage_jobs"
ABORT_CHANNEL = "cabbage_aborts"


class WakePipe:
    """The self-pipe that ``Listener.interrupt`` writes to and ``Listener.wait`` polls."""

    def __init__(self) -> None:
        self.reader, self.writer = os.pipe()
        os.set_blocking(self.reader, False)
        os.set_blocking(self.writer, False)

    def wake(self) -> None:
        try:
            os.write(self.writer, b"\0")
        except (BlockingIOError, OSError):
            pass  # full: a wake-up is already pending; closed: the store is gone

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.reader, 4096):
                pass

    def close(self) -> None:
        for fd in (self.reader, self.writer):
            with contextlib.suppress(OSError):
                os.close(fd)


class Listener:
    """Waits on a connection for notifications of deferred jobs, or for ``interrupt()``.

    ``forget_connection()`` after the connection changed (a reconnect, a fork): the next wait
    sends LISTEN on the new one.
    """

    def __init__(self) -> None:
        self.wake_pipe = WakePipe()
        self.is_listening = False
        _listeners.add(self)

    def forget_connection(self) -> None:
        self.is_listening = False

    def wait(self, connection: Any, queues: Sequence[str] | None, timeout_s: float) -> bool:
        """True when a job of ``queues`` (None: any) may be available, False after ``timeout_s``
        or an interrupt. Notifications that arrived before the wait count."""
        deadline_ms = _monotonic_ms() + max(timeout_s, 0.0) * 1000
        wanted = None if queues is None else set(queues)
        if not self.is_listening:
            with connection.cursor() as cursor:
                cursor.execute(queries["listen_for_jobs"])
            self.is_listening = True
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN)
        poller.register(self.wake_pipe.reader, select.POLLIN)
        while True:
            connection.poll()  # reads what arrived, without blocking
            if _take_notifications(connection, wanted):
                return True
            remaining_ms = deadline_ms - _monotonic_ms()
            if remaining_ms <= 0:
                return False
            events = poller.poll(math.ceil(remaining_ms))
            if any(fd == self.wake_pipe.reader for fd, _ in events):
                self.wake_pipe.drain()
                return False

    def drop_pending(self, connection: Any) -> None:
        """Forgets the notifications received so far: after a claim that found jobs the worker
        claims again before it waits, so they are not needed, and a busy worker's list of them
        would grow without end."""
        if self.is_listening and connection is not None:
            del connection.notifies[:]

    def interrupt(self) -> None:
        # One write(2) on a non-blocking pipe: safe from a signal handler and from any thread.
        self.wake_pipe.wake()

    def close(self) -> None:
        self.wake_pipe.close()


_listeners: "weakref.WeakSet[Listener]" = weakref.WeakSet()


def _renew_wake_pipes_in_child() -> None:
    # Right after fork, while the inherited descriptors are surely still the pipe's: a child
    # waking its copy would wake the parent's wait too.
    for listener in list(_listeners):
        listener.wake_pipe.close()
        listener.wake_pipe = WakePipe()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_wake_pipes_in_child)


def _take_notifications(connection: Any, wanted: set[str] | None) -> bool:
    """Empties the connection's notification list; True if one was for a wanted queue."""
    notifies = connection.notifies
    relevant = any(
        notify.channel == NOTIFY_CHANNEL and (wanted is None or notify.payload in wanted) for notify in notifies
    )
    del notifies[:]
    return relevant


def take_abort_notifications(connection: Any, worker_id: int) -> bool:
    """Reads what arrived on a connection that listens for aborts, without blocking, and empties
    its notification list; True if one named this worker."""
    connection.poll()
    notifies = connection.notifies
    named = any(notify.channel == ABORT_CHANNEL and notify.payload == str(worker_id) for notify in notifies)
    del notifies[:]
    return named


def _monotonic_ms() -> float:
    return time.monotonic() * 1000


__all__ = ["Listener", "NOTIFY_CHANNEL", "ABORT_CHANNEL", "take_abort_notifications"]
