"""Signal intake of the master: handlers only record the signal number and wake the loop.

The master loop waits on ``SignalIntake.wait()`` and then reads ``drain()``; everything a
signal means is done there, outside the handler. The C-level wake-up fd
(``signal.set_wakeup_fd``) makes the wait return even when the signal arrives just before it
starts. Signals are blocked across ``fork`` (``blocked``) so that a child never runs the
master's handlers: it unblocks them after installing its own.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
from types import FrameType
from typing import Iterator, Sequence

# TERM, INT: graceful stop; QUIT (or a second TERM/INT): fast stop; HUP: reload;
# TTIN/TTOU: one worker more/fewer; CHLD: a child exited (the loop reaps).
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


class SignalIntake:
    """Records handled signals in a deque and wakes ``wait()`` through a non-blocking pipe."""

    def __init__(self) -> None:
        self._pending: collections.deque[int] = collections.deque()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def install(self) -> None:
        # warn_on_full_buffer off: a full pipe already means "wake up", nothing is lost (the
        # numbers are in the deque).
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # The whole handler: no logging, no lock, no database, no os.kill (STYLE section 6).
        self._pending.append(signum)

    def wait(self, timeout_s: float, also_readable: Sequence[int] = ()) -> None:
        """Returns when a signal arrived (or was pending), one of ``also_readable`` (the
        children's report pipes) has something to read, or after ``timeout_s``."""
        if not self._pending:
            select.select([self.read_fd, *also_readable], [], [], max(0.0, timeout_s))
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 512):
                pass

    def drain(self) -> list[int]:
        """The signals received since the last drain, in arrival order."""
        received = []
        while self._pending:
            received.append(self._pending.popleft())
        return received

    def close_in_child(self) -> None:
        """In a forked child: forget the master's wake-up fd and close its pipe."""
        signal.set_wakeup_fd(-1)
        for fd in (self.read_fd, self.write_fd):
            os.close(fd)
        self._pending.clear()


@contextlib.contextmanager
def blocked(signals: tuple[int, ...] = HANDLED_SIGNALS) -> Iterator[set[int]]:
    """Blocks ``signals`` in this thread for the block's duration; yields the mask to restore.

    Around ``fork``: the parent gets its mask back on leaving; the child calls
    ``restore_mask`` itself once its own handlers are in place.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield previous
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def restore_mask(mask: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def name_of(signum: int) -> str:
    """``SIGKILL`` for 9; the number as text for a signal Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
