"""Pure decisions of the master: which children to kill (a job past its timeout, a lease about to
end, a hung child), and how long to back off.

Nothing here reads a clock, a process or the database: times are passed in, so each rule is a
unit test. ``now`` and every ``*_at`` of a Child are ``time.monotonic()`` values, this host's
clock, which is also the clock of the children's reports (``supervisor.reports``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Iterable

from cabbage.jobs import WorkerInfo

if TYPE_CHECKING:
    from supervisor.children import Child, RunningJob

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
    """The worker row of each of these processes (pid -> row), matched by hostname and pid: for a
    child that died before it could report its worker id."""
    wanted = set(pids)
    return {worker.pid: worker for worker in workers if worker.hostname == hostname and worker.pid in wanted}


def find_children_to_kill(
    children: Iterable[Child], now: float, timeout_s: float, margin_s: float, database_reachable: bool,
    abort_timeout_s: float = math.inf,
) -> list[Verdict]:
    """Children the master must kill now, each with its reason; all times are this host's
    monotonic clock, as the children report them.

    - A job past its task's ``timeout=``: at the deadline.
    - A job still running ``abort_timeout_s`` after its child told it of an operator's abort.
    - A child running a job whose last accepted heartbeat is older than ``timeout_s - margin_s``:
      its lease is about to end, and any master may reclaim its jobs once the database sees
      the heartbeat older than the timeout; killed first, so that two runs of a lock's jobs never
      overlap, even while this master cannot reach the database either.
    - An idle child silent for longer than ``timeout_s`` (frozen by SIGSTOP, stuck in C code),
      or one that never registered within it, but only while the database answers the master:
      during an outage silence is expected, and an idle child holds nothing to protect.

    Children already stopping or being killed have their own deadline and are left out.
    """
    verdicts = []
    for child in children:
        if child.kill_reason is not None:
            continue
        overrun = next((job for job in child.running if job.deadline is not None and now >= job.deadline), None)
        if overrun is not None:
            verdicts.append(Verdict(child.pid, f"job {overrun.job_id} ({overrun.task_name}) timed out after "
                                               f"{now - overrun.started_at:.1f} s (its task's timeout is {overrun.timeout_s:g} s)"))  # fmt: skip
            continue
        aborted = next((job for job in child.running if _abort_deadline(job, abort_timeout_s) <= now), None)
        if aborted is not None:
            verdicts.append(Verdict(child.pid, f"job {aborted.job_id} ({aborted.task_name}) was aborted by "
                                               f"{aborted.aborted_by or 'an operator'} and still ran "
                                               f"{abort_timeout_s:g} s later (the abort timeout)"))  # fmt: skip
            continue
        silence_s = now - child.last_seen_at
        if child.running and silence_s > timeout_s - margin_s:
            job_ids = ", ".join(str(job.job_id) for job in child.running)
            verdicts.append(Verdict(child.pid, f"no heartbeat for {silence_s:.1f} s accepted by the database, near the heartbeat "
                                               f"timeout of {timeout_s:g} s: stopped before its lease on job {job_ids} ends"))  # fmt: skip
        elif not child.is_stopping and database_reachable and silence_s > timeout_s:
            if child.worker_id is None:
                verdicts.append(Verdict(child.pid, f"did not register its worker within {timeout_s:g} s"))
            else:
                verdicts.append(Verdict(child.pid, f"no heartbeat for {silence_s:.0f} s (heartbeat timeout {timeout_s:g} s)"))
    return verdicts


def next_kill_deadline(children: Iterable[Child], timeout_s: float, margin_s: float, abort_timeout_s: float = math.inf) -> float:
    """The soonest moment ``find_children_to_kill`` may find a child to kill for its job (a
    timeout, an abort or a lease), for the master's sleep; infinity when no child runs one."""
    moments = [math.inf]
    for child in children:
        if child.kill_reason is None and child.running:
            moments.append(child.last_seen_at + timeout_s - margin_s)
            moments += [job.deadline for job in child.running if job.deadline is not None]
            moments += [_abort_deadline(job, abort_timeout_s) for job in child.running]
    return min(moments)


def _abort_deadline(job: RunningJob, abort_timeout_s: float) -> float:
    """When a job whose abort was requested has its child killed; infinity when none was."""
    return math.inf if job.abort_requested_at is None else job.abort_requested_at + abort_timeout_s


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
