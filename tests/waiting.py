"""Waiting in tests: poll a condition until it holds, or fail saying what was awaited.

    from tests.waiting import wait_for

    job = wait_for(lambda: store.get_job(job_id).status == "succeeded" and store.get_job(job_id),
                   10, "job to succeed", context=supervisor.last_log_lines)
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

POLL_S = 0.02

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout_s: float, what: str, *, context: Callable[[], str] | None = None
) -> T:
    """Returns the predicate's first truthy value; raises AssertionError naming `what` (and the
    text `context()` gives, such as a supervisor's last log lines) after timeout_s seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
        time.sleep(POLL_S)
