"""Riding out a database outage: jittered backoff between attempts, and one log line when an
outage starts and one when it ends.

A worker that loses its connection keeps what it was doing (the outcome of the attempt it ran,
the jobs it holds) and tries the same call again until the database answers; its lease
(``cabbage.lease``) and its master decide when it must give up instead.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, TypeVar

from cabbage.exceptions import DatabaseUnavailable

T = TypeVar("T")

FIRST_DELAY_S = 0.05
MAX_DELAY_S = 2.0


class Backoff:
    """Delays that double from ``first_s`` up to ``max_s``, each drawn in [half, whole] of its
    step so that the workers of a host do not knock all at once."""

    def __init__(self, first_s: float = FIRST_DELAY_S, max_s: float = MAX_DELAY_S, rng: Callable[[], float] = random.random) -> None:
        self.first_s, self.max_s, self.rng = first_s, max_s, rng
        self.failures = 0

    def next_delay_s(self) -> float:
        step = min(self.max_s, self.first_s * 2 ** min(self.failures, 32))
        self.failures += 1
        return step * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.failures = 0


class Outage:
    """Logs ``database_unreachable`` once when calls start failing and ``database_reconnected``
    once when one works again, with how long it lasted."""

    def __init__(self, log: Any, **fields: Any) -> None:
        self.log, self.fields = log, fields
        self.down_since: float | None = None

    def failed(self, error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log.warning("database_unreachable", error=str(error), **self.fields)

    def succeeded(self) -> None:
        if self.down_since is not None:
            outage_s = time.monotonic() - self.down_since
            self.down_since = None
            self.log.info("database_reconnected", outage_s=round(outage_s, 2), **self.fields)


def until_it_answers(
    call: Callable[[], T],
    outage: Outage,
    *,
    backoff: Backoff | None = None,
    should_give_up: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried again after each DatabaseUnavailable with a backoff, until it answers.

    When ``should_give_up()`` says so after a failure, that failure is raised.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            result = call()
        except DatabaseUnavailable as exc:
            outage.failed(exc)
            if should_give_up():
                raise
            sleep(backoff.next_delay_s())
            continue
        outage.succeeded()
        return result


__all__ = ["Backoff", "Outage", "until_it_answers"]
