"""Wrong tokens per client address: a few per window, then 429 with Retry-After until it passes.

A sliding window: an address that presented ``allowed`` wrong tokens within ``window_s`` seconds
is refused until the oldest of them is ``window_s`` old. Memory is bounded: at most
``max_clients`` addresses are remembered (the least recently wrong is forgotten first), each
with at most ``allowed`` times.

    throttle = Throttle()
    if throttle.retry_after_s(address) > 0: ...   # refuse, before even comparing the token
    throttle.record_failure(address)              # after a wrong one
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

WRONG_TOKENS_ALLOWED = 5
WINDOW_S = 60.0
MAX_CLIENTS = 10_000


class Throttle:
    """Counts wrong tokens per client address; thread-safe (werkzeug serves from threads)."""

    def __init__(
        self,
        allowed: int = WRONG_TOKENS_ALLOWED,
        window_s: float = WINDOW_S,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = allowed
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def retry_after_s(self, client: str) -> float:
        """Seconds until ``client`` may present a token again; 0.0 when it may now."""
        with self._lock:
            failures = self._failures.get(client)
            if failures is None or len(failures) < self.allowed:
                return 0.0
            return max(failures[0] + self.window_s - self.clock(), 0.0)

    def record_failure(self, client: str) -> bool:
        """Counts a wrong token of ``client``; True when this one starts a lockout."""
        with self._lock:
            now = self.clock()
            failures = self._failures.pop(client, None) or collections.deque(maxlen=self.allowed)
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            failures.append(now)
            self._failures[client] = failures  # last: the most recently wrong
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
            return len(failures) == self.allowed
