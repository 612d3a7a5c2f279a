"""RetryPolicy: from an attempt number and an exception, decide when to retry or to give up (pure)."""

from __future__ import annotations

import dataclasses
import math
from typing import Union

from cabbage.exceptions import ConfigurationError


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is tried again.

    ``max_attempts`` counts every attempt, the first one included (``None``: no limit).
    The wait before attempt n+1 is ``wait_s`` (fixed) or ``wait_s * 2**(n-1)`` (exponential),
    capped by ``max_wait_s``. Only exceptions that are instances of ``retry_on`` are retried.

    >>> @task_manager.task(queue="mail", retry=RetryPolicy(max_attempts=5, wait_s=2, backoff="exponential"))
    ... def send(address): ...
    """

    max_attempts: int | None = 1
    wait_s: float = 0.0
    backoff: str = "fixed"
    max_wait_s: float = 3600.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1
        ):
            raise ConfigurationError(f"max_attempts must be a whole number >= 1 or None, got {self.max_attempts!r}")
        if self.backoff not in ("fixed", "exponential"):
            raise ConfigurationError(f"backoff must be 'fixed' or 'exponential', got {self.backoff!r}")
        for name in ("wait_s", "max_wait_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"{name} must be a finite number of seconds >= 0, got {value!r}")

    def retry_in_s(self, attempt: int, error: BaseException | None) -> float | None:
        """Seconds to wait before the next attempt, or None when attempt ``attempt`` was the last."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return None
        if error is not None and not isinstance(error, self.retry_on):
            return None
        if self.backoff == "exponential":
            # Capping the exponent keeps 2**n a float even after thousands of attempts.
            return min(self.wait_s * 2.0 ** min(attempt - 1, 1000), self.max_wait_s)
        return min(self.wait_s, self.max_wait_s)


RetrySpec = Union[None, bool, int, RetryPolicy]


def make_retry_policy(retry: RetrySpec) -> RetryPolicy:
    """Turns the ``retry=`` argument of ``@task`` into a policy.

    ``None``/``False``/``0``: one attempt; ``N``: N retries (N+1 attempts); ``True``: retry without limit.
    """
    if isinstance(retry, RetryPolicy):
        return retry
    if retry is None or retry is False:
        return RetryPolicy(max_attempts=1)
    if retry is True:
        return RetryPolicy(max_attempts=None)
    if isinstance(retry, int) and retry >= 0:
        return RetryPolicy(max_attempts=retry + 1)
    raise ConfigurationError(
        f"retry must be a number of retries (>= 0), True, or a RetryPolicy, got {retry!r}"
    )
