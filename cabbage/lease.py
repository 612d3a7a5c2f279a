"""A worker's lease on its jobs: it ends ``heartbeat_timeout`` after the last heartbeat the database
accepted, counted on this host's monotonic clock from the moment that heartbeat was *sent*.

Any master may reclaim a worker whose heartbeat, by the database clock, is older than the
timeout (plus one check interval). So a worker whose heartbeats fail must stop its jobs before
the lease ends: its master kills it ``margin_s`` before (``supervisor.health``), and it claims
no new job with less than another ``margin_s`` left, heartbeating first instead. Counting from
the send, not from the answer, keeps the worker's end of the lease no later than the
database's, whatever the round trip took; the margin absorbs the clocks' drift over a timeout.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


def margin_for(heartbeat_interval_s: float, heartbeat_timeout_s: float) -> float:
    """One heartbeat interval, but never more than a third of the timeout."""
    return min(heartbeat_interval_s, heartbeat_timeout_s / 3)


class Lease:
    """The last accepted heartbeat's send time; ``renew`` is called by whoever got one accepted.

    ``on_renewed(sent_at)`` is called on each renewal (the supervisor's child reports it to its
    master). Thread-safe: the heartbeat thread and the worker loop both renew it.
    """

    def __init__(
        self,
        timeout_s: float,
        margin_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_renewed: Callable[[float], None] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.margin_s = margin_s
        self.clock = clock
        self.on_renewed = on_renewed
        self._lock = threading.Lock()
        self.accepted_sent_at: float | None = None

    def renew(self, sent_at: float) -> None:
        with self._lock:
            if self.accepted_sent_at is not None and sent_at <= self.accepted_sent_at:
                return  # an older heartbeat answered late: it proves nothing newer
            self.accepted_sent_at = sent_at
        if self.on_renewed is not None:
            self.on_renewed(sent_at)

    def remaining_s(self) -> float:
        """Seconds until the lease ends (0 when it never began or has ended)."""
        if self.accepted_sent_at is None:
            return 0.0
        return max(0.0, self.accepted_sent_at + self.timeout_s - self.clock())

    def allows_claim(self) -> bool:
        """Whether a job claimed now has a margin left before the master's kill (two margins
        before the lease ends)."""
        return self.remaining_s() > 2 * self.margin_s


__all__ = ["Lease", "margin_for"]
