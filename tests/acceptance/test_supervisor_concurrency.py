"""cabbage-supervisor --concurrency M: each child runs up to M jobs at once, in threads and on an
event loop, with every guarantee of a job kept: locks, reclaim, timeouts, graceful stops."""
from __future__ import annotations

import itertools
import os
import signal
from typing import Callable

import pytest

from cabbage.jobs import Status
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, title_of
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]
OPTIONS = ("--workers", "2", "--heartbeat-interval", "1", "--heartbeat-timeout", "5", "--graceful-timeout", "10")

TASKS = """
import asyncio


@task_manager.task
def locked(lock, n):
    started = time.time()
    time.sleep(0.02)
    record("ran", lock=lock, n=n, start=started, end=time.time())


@task_manager.task
def hold(n):
    record("began", n=n)
    time.sleep(3)
    record("worked", n=n)


@task_manager.task(retry=1)
def hold_then_retry(n):
    marker = os.path.join(os.path.dirname(os.environ["CABBAGE_TEST_EVENTS"]), f"{n}.tried")
    record("began", n=n, retry=os.path.exists(marker))
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(60)
    record("worked", n=n)


@task_manager.task(timeout=0.5)
async def too_slow(n):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        record("cancelled", n=n, pid=os.getpid())
        raise


@task_manager.task(timeout=0.5)
def stuck(n):
    record("stuck", n=n, pid=os.getpid())
    time.sleep(60)


@task_manager.task
async def io(n):
    await asyncio.sleep(0.05)
    record("io", n=n)
"""


@pytest.mark.parametrize(
    "options",
    [("--concurrency", "20"), ("--concurrency", "20", "--prefetch", "20"), ("--concurrency", "1", "--prefetch", "5")],
    ids=["20 at once", "20 at once, prefetch 20", "one at a time, prefetch 5"],
)
def test_locks_never_overlap_with_many_jobs_held_in_each_of_two_children(
    start_supervisor: Start, jobs: Jobs, options: tuple[str, ...]
) -> None:
    supervisor = start_supervisor(TASKS, *options, defaults=OPTIONS)
    supervisor.wait_for_children(2)
    # More locks than one child has slots: one child that finishes and claims in one round trip could
    # otherwise take every lock's next job itself, and the other child would never run one.
    locks = [f"lock-{number}" for number in range(40)]
    for lock in locks:
        jobs.defer_many("locked", [[lock, n] for n in range(10)], lock=lock)
    wait_for(lambda: jobs.counts()[Status.SUCCEEDED] == 400, 60, "every job to succeed", context=supervisor.last_log_lines)
    runs = supervisor.task_events("ran")
    assert len(runs) == 400
    for lock in locks:
        line = sorted((run["start"], run["end"], run["n"]) for run in runs if run["lock"] == lock)
        assert [n for _, _, n in line] == list(range(10)), f"{lock} ran out of order"
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(line)), f"{lock} overlapped"
    # Both children ran jobs, so the lines above held across processes, not only within one.
    assert len({run["pid"] for run in runs}) == 2


def test_a_killed_child_holding_many_jobs_has_each_reclaimed_once(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--concurrency", "5", defaults=("--workers", "1", *OPTIONS[2:]))
    [child] = supervisor.wait_for_children(1)
    job_ids = jobs.defer_many("hold_then_retry", [[n] for n in range(5)], max_attempts=2)
    wait_for(lambda: len(supervisor.task_events("began")) == 5, 20, "five jobs to begin", context=supervisor.last_log_lines)
    wait_for(lambda: title_of(child).endswith("running 5/5"), 5, "the child's title to show 5 of 5", context=supervisor.last_log_lines)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: all(jobs.status(job_id) is Status.SUCCEEDED for job_id in job_ids), 30, "every job to succeed on its retry",
             context=supervisor.last_log_lines)  # fmt: skip
    assert all(jobs.get(job_id).attempts == 2 for job_id in job_ids)
    reclaimed = [job_id for line in supervisor.events("jobs_reclaimed") for job_id in line["job_ids"]]
    assert sorted(reclaimed) == sorted(job_ids)  # each once
    assert sorted(event["n"] for event in supervisor.task_events("worked")) == list(range(5))


@pytest.mark.parametrize("concurrency", [3, 1])
def test_a_killed_child_has_its_prefetched_jobs_given_back_without_an_attempt(start_supervisor: Start, jobs: Jobs, concurrency: int) -> None:
    supervisor = start_supervisor(TASKS, "--concurrency", str(concurrency), "--prefetch", "3",
                                  defaults=("--workers", "1", *OPTIONS[2:]))  # fmt: skip
    [child] = supervisor.wait_for_children(1)
    job_ids = jobs.defer_many("hold", [[n] for n in range(concurrency + 3)], max_attempts=1)
    wait_for(lambda: len(supervisor.task_events("began")) == concurrency, 20, "the slots' jobs to begin",
             context=supervisor.last_log_lines)  # fmt: skip
    # The other three are started and held by the child, waiting for a slot.
    wait_for(lambda: all(jobs.status(job_id) is Status.DOING for job_id in job_ids), 5, "every job doing",
             context=supervisor.last_log_lines)  # fmt: skip
    began = {job_ids[event["n"]] for event in supervisor.task_events("began")}
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: all(jobs.status(job_id) in (Status.SUCCEEDED, Status.FAILED) for job_id in job_ids), 30,
             "every job to end", context=supervisor.last_log_lines)  # fmt: skip
    reclaimed = [job_id for line in supervisor.events("jobs_reclaimed") for job_id in line["job_ids"]]
    assert sorted(reclaimed) == sorted(job_ids)  # each once, the prefetched ones too
    # The three that ran used their only attempt; the three that never began went back unused
    # and ran in the new child.
    assert {job_id for job_id in job_ids if jobs.status(job_id) is Status.FAILED} == began
    never_begun = set(job_ids) - began
    assert all(jobs.status(job_id) is Status.SUCCEEDED and jobs.get(job_id).attempts == 1 for job_id in never_begun)
    assert sorted(event["n"] for event in supervisor.task_events("worked")) == sorted(job_ids.index(job_id) for job_id in never_begun)


def test_an_async_task_past_its_timeout_is_cancelled_and_the_child_goes_on(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--concurrency", "4", defaults=("--workers", "1", *OPTIONS[2:]))
    [child] = supervisor.wait_for_children(1)
    slow = jobs.defer("too_slow", 1)
    quick = jobs.defer_many("io", [[n] for n in range(10)])
    wait_for(lambda: jobs.status(slow) is Status.FAILED, 20, "the slow job to fail", context=supervisor.last_log_lines)
    assert supervisor.task_events("cancelled", n=1)[0]["pid"] == child
    error = jobs.get(slow).last_error
    assert error is not None and error.type == "cabbage.attempts.TaskTimedOut" and "was cancelled" in error.message
    wait_for(lambda: all(jobs.status(job_id) is Status.SUCCEEDED for job_id in quick), 20, "the other jobs", context=supervisor.last_log_lines)
    assert supervisor.children() == [child] and not supervisor.events("worker_killed")


@pytest.mark.parametrize("options", [("--concurrency", "3"), ("--prefetch", "2")], ids=["3 at once", "one at a time, prefetch 2"])
def test_a_thread_past_its_timeout_has_its_child_replaced_once_the_others_are_done(
    start_supervisor: Start, jobs: Jobs, options: tuple[str, ...]
) -> None:
    supervisor = start_supervisor(TASKS, *options, defaults=("--workers", "1", *OPTIONS[2:]))
    [child] = supervisor.wait_for_children(1)
    stuck = jobs.defer("stuck", 1)
    others = jobs.defer_many("hold", [[n] for n in range(2)])
    wait_for(lambda: jobs.status(stuck) is Status.FAILED, 30, "the stuck job to be reclaimed", context=supervisor.last_log_lines)
    if "--concurrency" in options:
        assert all(jobs.status(job_id) is Status.SUCCEEDED for job_id in others)  # they finished first
    else:
        # One at a time, the stuck job was all the child ran: it exited at once, and the jobs it held
        # prefetched, never begun, went back unused and ran in the new child.
        wait_for(lambda: all(jobs.status(job_id) is Status.SUCCEEDED for job_id in others), 20, "the others to succeed",
                 context=supervisor.last_log_lines)  # fmt: skip
        assert child not in {event["pid"] for event in supervisor.task_events("began")}
    assert all(jobs.get(job_id).attempts == 1 for job_id in others)
    error = jobs.get(stuck).last_error
    assert error is not None and error.type == "WorkerLost" and "past its task's timeout" in error.message
    [exited] = [line for line in supervisor.events("worker_exited") if line["child_pid"] == child]
    assert exited["exit_code"] == 79
    supervisor.wait_for_children(1, excluding=[child])  # replaced
    assert not supervisor.events("child_respawn_delayed")


def test_a_graceful_stop_waits_for_every_job_in_flight(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--concurrency", "4", defaults=OPTIONS)
    supervisor.wait_for_children(2)
    job_ids = jobs.defer_many("hold", [[n] for n in range(8)])
    wait_for(lambda: len(supervisor.task_events("began")) == 8, 20, "eight jobs to begin", context=supervisor.last_log_lines)
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit(30) == 0
    assert all(jobs.status(job_id) is Status.SUCCEEDED for job_id in job_ids)
    assert not supervisor.events("worker_killed")


@pytest.mark.parametrize("concurrency", [4, 1])
def test_a_graceful_stop_gives_the_prefetched_jobs_back_and_waits_for_the_running_ones(
    start_supervisor: Start, jobs: Jobs, concurrency: int
) -> None:
    supervisor = start_supervisor(TASKS, "--concurrency", str(concurrency), "--prefetch", "4",
                                  defaults=("--workers", "1", *OPTIONS[2:]))  # fmt: skip
    supervisor.wait_for_children(1)
    job_ids = jobs.defer_many("hold", [[n] for n in range(12)])
    wait_for(lambda: len(supervisor.task_events("began")) == concurrency, 20, "the slots' jobs to begin",
             context=supervisor.last_log_lines)  # fmt: skip
    wait_for(lambda: jobs.counts()[Status.DOING] == concurrency + 4, 5, "the running and four prefetched",
             context=supervisor.last_log_lines)  # fmt: skip
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit(30) == 0
    statuses = [jobs.status(job_id) for job_id in job_ids]
    assert statuses.count(Status.SUCCEEDED) == concurrency and statuses.count(Status.TODO) == 12 - concurrency
    assert all(jobs.get(job_id).attempts == 0 for job_id in job_ids if jobs.status(job_id) is Status.TODO)
    assert [event["jobs"] for event in supervisor.events("prefetch_given_back")] == [4]
    assert not supervisor.events("worker_killed")
