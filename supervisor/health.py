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


def match_heartbeats(pids: Iterable[int], workers: Iterable[WorkerInfo], hostname: str) -> dict[int, WorkerInfo]:
    """The worker row of each of our processes (pid -> row), matched by hostname and pid."""
    wanted = set(pids)
    return {worker.pid: worker for worker in workers if worker.hostname == hostname and worker.pid in wanted}


def note_heartbeats(
    children: Mapping[int, Child], heartbeats: Mapping[int, WorkerInfo], now: float, timeout_s: float
) -> dict[int, Child]:
    """The children with what their rows tell: their ``worker_id``, and ``last_seen_at`` when fresh."""
    noted = dict(children)
    for pid, row in heartbeats.items():
        child = noted[pid]
        last_seen_at = now if row.heartbeat_age_s <= timeout_s else child.last_seen_at
        noted[pid] = dataclasses.replace(child, worker_id=row.worker_id, last_seen_at=last_seen_at)
    return noted


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


class DatabaseLink:
    """Whether the master's database calls work, and when to try again after a failure.

    Only the transitions are reported (an outage starts, an outage ends), so the master logs
    each outage once, however many calls fail during it.
    """

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.down_since: float | None = None

    def is_due(self, now: float) -> bool:
        return now >= self.retry_at

    def failed(self, now: float) -> bool:
        """Records a failed call; True when it starts an outage."""
        is_new_outage = self.down_since is None
        if is_new_outage:
            self.down_since = now
        self.failures += 1
        self.retry_at = now + database_retry_delay_s(self.failures)
        return is_new_outage

    def succeeded(self, now: float) -> float | None:
        """Records a working call; the outage's length in seconds when it ends one, else None."""
        if self.down_since is None:
            return None
        outage_s = now - self.down_since
        self.failures, self.retry_at, self.down_since = 0, 0.0, None
        return outage_s


def database_retry_delay_s(failures: int) -> float:
    """How long the master waits before its next database call after ``failures`` in a row."""
    if failures <= 0:
        return 0.0
    return min(MAX_DATABASE_RETRY_S, FIRST_DATABASE_RETRY_S * 2 ** min(failures - 1, 32))
