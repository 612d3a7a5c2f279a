"""Queueing locks at defer time: which jobs of a defer clash, and the refusal both stores give.

At most one ``todo`` job may hold a queueing lock (the partial unique index
``cabbage_jobs_one_todo_per_queueing_lock``). A defer is all or nothing: when any of its jobs
would be a second one, ``refuse`` raises ``AlreadyEnqueued`` naming each such job and inserts
nothing. Both stores look for clashes in the same order, so that they refuse alike: first
between the jobs of the defer itself (``clashes_within``), then with the waiting jobs.
"""

from __future__ import annotations

from typing import Callable, NoReturn, Sequence

from cabbage.exceptions import AlreadyEnqueued, QueueingLockClash

MAX_LISTED_CLASHES = 10  # an error message is one line
# The partial unique index that holds the rule (migration 0007): its name is how a refusal by
# the database is recognised (SQLSTATE 23505 on it), never its message.
QUEUEING_LOCK_INDEX = "cabbage_jobs_one_todo_per_queueing_lock"


class QueueingLockRace(Exception):
    """Inside the PostgreSQL store: the unique index refused a defer that raced another
    transaction's for a key. It inserted nothing; the store runs it once more."""


def clashes_within(queueing_locks: Sequence[str | None]) -> list[QueueingLockClash]:
    """The jobs of one defer (their queueing locks, in order) that repeat an earlier one's key."""
    first_position: dict[str, int] = {}
    clashes = []
    for position, queueing_lock in enumerate(queueing_locks, start=1):
        if queueing_lock is None:
            continue
        if queueing_lock in first_position:
            clashes.append(QueueingLockClash(position, queueing_lock, earlier_position=first_position[queueing_lock]))
        else:
            first_position[queueing_lock] = position
    return clashes


def find_clashes(
    queueing_locks: Sequence[str | None], waiting_job_of: Callable[[str], int | None]
) -> list[QueueingLockClash]:
    """Every clash of a defer: those within it, else those with the waiting jobs
    (``waiting_job_of(key)``: the todo job holding the key, or None)."""
    within = clashes_within(queueing_locks)
    if within:
        return within
    clashes = []
    for position, queueing_lock in enumerate(queueing_locks, start=1):
        waiting_job_id = waiting_job_of(queueing_lock) if queueing_lock is not None else None
        if waiting_job_id is not None:
            clashes.append(QueueingLockClash(position, queueing_lock, waiting_job_id))  # type: ignore[arg-type]
    return clashes


def refuse(clashes: Sequence[QueueingLockClash]) -> NoReturn:
    raise AlreadyEnqueued(describe(clashes), clashes)


def refuse_race(queueing_locks: Sequence[str | None]) -> NoReturn:
    """Refuses a defer that lost a race for a queueing lock when the winner's id is not known:
    each job with a key may be the one that clashed."""
    clashes = [
        QueueingLockClash(position, queueing_lock)
        for position, queueing_lock in enumerate(queueing_locks, start=1)
        if queueing_lock is not None
    ]
    keys = sorted({clash.queueing_lock for clash in clashes})
    which = f"queueing lock {keys[0]!r}" if len(keys) == 1 else (
        f"one of the queueing locks {', '.join(map(repr, keys[:MAX_LISTED_CLASHES]))}"
    )
    raise AlreadyEnqueued(
        f"{which} was taken by a job that another transaction deferred at the same moment; nothing was deferred",
        clashes,
    )


def describe(clashes: Sequence[QueueingLockClash]) -> str:
    """One line: what clashed with what, that nothing was deferred, and when it can be."""
    if len(clashes) == 1 and clashes[0].earlier_position is None:
        (clash,) = clashes
        assert clash.waiting_job_id is not None, "a race without the winner is refuse_race's"
        return (
            f"queueing lock {clash.queueing_lock!r} is held by job {clash.waiting_job_id}, which is waiting; "
            f"nothing was deferred (one todo job per queueing lock: defer again once job {clash.waiting_job_id} "
            "has started or was cancelled)"
        )
    parts = [_describe_one(clash) for clash in clashes[:MAX_LISTED_CLASHES]]
    if len(clashes) > MAX_LISTED_CLASHES:
        parts.append(f"and {len(clashes) - MAX_LISTED_CLASHES} more")
    return f"cannot defer: {'; '.join(parts)}; nothing was deferred (one todo job per queueing lock)"


def _describe_one(clash: QueueingLockClash) -> str:
    if clash.earlier_position is not None:
        return f"job {clash.position} repeats the queueing lock {clash.queueing_lock!r} of job {clash.earlier_position}"
    return f"job {clash.position} (queueing lock {clash.queueing_lock!r}) clashes with waiting job {clash.waiting_job_id}"


__all__ = ["QUEUEING_LOCK_INDEX", "QueueingLockRace", "clashes_within", "find_clashes", "refuse", "refuse_race", "describe"]
