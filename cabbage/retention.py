"""Retention: deleting finished jobs in bounded batches, through any JobStore.

One batch is one short transaction of the store (``JobStore.prune_finished_jobs``) that skips
rows others hold, so workers keep claiming while a prune runs. ``cabbage jobs prune`` works
through the whole backlog; a supervisor with ``--retention`` takes one batch per turn of its
loop, so that it never stops reaping for long.

>>> prune_in_batches(store, older_than_s=parse_duration("7d"))
"""

from __future__ import annotations

import time
from typing import Callable, Collection

import structlog

from cabbage.exceptions import ConfigurationError
from cabbage.jobs import FINISHED_STATUSES, Status
from cabbage.store import JobStore

log = structlog.get_logger()

PRUNE_BATCH_SIZE = 10_000


def prune_in_batches(
    store: JobStore,
    older_than_s: float,
    statuses: Collection[Status] = FINISHED_STATUSES,
    batch_size: int = PRUNE_BATCH_SIZE,
    should_stop: Callable[[], bool] = lambda: False,
    max_batches: int | None = None,
) -> int:
    """Deletes jobs finished more than ``older_than_s`` ago, one batch at a time; returns how many.

    Stops when a batch comes back short (nothing left), when ``should_stop()`` says so (asked
    before each batch), or after ``max_batches``: ``max_batches=1`` returns ``batch_size``
    while more may remain. Logs one ``jobs_pruned`` line.
    """
    check_prune_arguments(older_than_s, statuses, batch_size)
    wanted = frozenset(statuses)
    started = time.monotonic()
    deleted = batches = 0
    while not should_stop() and (max_batches is None or batches < max_batches):
        batch_deleted = store.prune_finished_jobs(older_than_s, wanted, batch_size)
        deleted += batch_deleted
        batches += 1
        if batch_deleted < batch_size:
            break
    log.info(
        "jobs_pruned",
        deleted=deleted,
        batches=batches,
        older_than_s=older_than_s,
        statuses=sorted(status.value for status in wanted),
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return deleted


def check_prune_arguments(older_than_s: float, statuses: Collection[Status], batch_size: int) -> None:
    """Refuses a negative age, an unfinished status (or none), and an empty batch."""
    if older_than_s < 0:
        raise ConfigurationError(f"older_than_s must be >= 0, got {older_than_s}")
    unfinished = sorted(status.value for status in statuses if status not in FINISHED_STATUSES)
    if not statuses or unfinished:
        raise ConfigurationError(f"only finished jobs (succeeded, failed, cancelled) can be pruned, got {unfinished or 'none'}")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")


__all__ = ["prune_in_batches", "check_prune_arguments", "PRUNE_BATCH_SIZE"]
