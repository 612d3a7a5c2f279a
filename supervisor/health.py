"""Pure decisions of the master: which children are hung or overran, and how long to back off.

Nothing here reads a clock, a process or the database: times and heartbeats are passed in, so
each rule is a unit test. ``now`` and every ``*_at`` of a Child are ``time.monotonic()``
values; heartbeat ages and job run times come from the database clock (ARCHITECTURE
invariant 7).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterable, Mapping

from cabbage.jobs import WorkerInfo

if TYPE_CHECKING:
    from supervisor.children import Child

# A child that lived this long before dying was not crash-looping: the count starts over.
STABLE_AFTER_S = 10.0
FIRST_RESPAWN_DELAY_S = 0.5
MAX_RESPAWN_DELAY_S = 30.0
FIRST_DATABASE_RETRY_S = 0.5
MAX_DATABASE_RETRY_S = 10.0


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A child the master must kill, and why (the why ends up in its jobs' errors)."""

    pid: int
    reason: str


def match_heartbeats(children: Iterable[Child], workers: Iterable[WorkerInfo], hostname: str) -> dict[int, WorkerInfo]:
    """The worker row of each child (pid -> row), matched by hostname and pid."""
    pids = {child.pid for child in children}
    return {worker.pid: worker for worker in workers if worker.hostname == hostname and worker.pid in pids}


def find_hung_children(
    children: Iterable[Child], heartbeats: Mapping[int, WorkerInfo], now: float, timeout_s: float
) -> list[Verdict]:
    """Children that gave no sign of life for longer than ``timeout_s``.

    A child with a row is hung when its heartbeat is older than the timeout (frozen by
    SIGSTOP, stuck in C code). A child without a row is hung when the master has not seen a
    fresh heartbeat of it (``child.last_seen_at``, its start until it registers) for longer
    than the timeout: it never registered, or its row was reclaimed while it was frozen.
    Children already stopping or being killed have their own deadline and are left out.
    """
    verdicts = []
    for child in children:
        if child.is_stopping or child.kill_reason is not None:
            continue
        row = heartbeats.get(child.pid)
        if row is not None:
            if row.heartbeat_age_s > timeout_s:
                verdicts.append(Verdict(child.pid, f"no heartbeat for {row.heartbeat_age_s:.0f} s (heartbeat timeout {timeout_s:g} s)"))
        elif now - child.last_seen_at > timeout_s:
            if child.worker_id is None:
                verdicts.append(Verdict(child.pid, f"did not register its worker within {timeout_s:g} s"))
            else:
                silence_s = now - child.last_seen_at
                verdicts.append(Verdict(child.pid, f"its worker row is gone and it gave no sign of life for {silence_s:.0f} s"))
    return verdicts


def find_overrunning_children(
    children: Iterable[Child], heartbeats: Mapping[int, WorkerInfo], task_timeouts_s: Mapping[str, float | None]
) -> list[Verdict]:
    """Children whose current job ran longer than its task's ``timeout``."""
    verdicts = []
    for child in children:
        if child.is_stopping or child.kill_reason is not None:
            continue
        row = heartbeats.get(child.pid)
        if row is None or row.current_task_name is None or row.current_job_run_s is None:
            continue
        timeout_s = task_timeouts_s.get(row.current_task_name)
        if timeout_s is not None and row.current_job_run_s > timeout_s:
            verdicts.append(
                Verdict(
                    child.pid,
                    f"job {row.current_job_id} ({row.current_task_name}) timed out after "
                    f"{row.current_job_run_s:.0f} s (its task's timeout is {timeout_s:g} s)",
                )
            )
    return verdicts


def count_early_exits(previous: int, lifetime_s: float) -> int:
    """The crash-loop count after a child died unexpectedly having lived ``lifetime_s``."""
    return previous + 1 if lifetime_s < STABLE_AFTER_S else 1


def respawn_delay_s(recent_exits: int) -> float:
    """How long to wait before replacing a child when ``recent_exits`` children died young in a row.

    The first is replaced at once (a crash is not yet a loop); then 0.5 s, doubling, up to 30 s.
    """
    if recent_exits <= 1:
        return 0.0
    # The exponent is capped: a long loop must not overflow a float.
    return min(MAX_RESPAWN_DELAY_S, FIRST_RESPAWN_DELAY_S * 2 ** min(recent_exits - 2, 32))


def database_retry_delay_s(failures: int) -> float:
    """How long the master waits before its next database call after ``failures`` in a row."""
    if failures <= 0:
        return 0.0
    return min(MAX_DATABASE_RETRY_S, FIRST_DATABASE_RETRY_S * 2 ** min(failures - 1, 32))
