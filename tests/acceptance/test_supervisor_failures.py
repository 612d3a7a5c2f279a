"""Children that die, freeze, overrun their task's timeout, or crash as soon as they start."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

from cabbage.jobs import Status
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, elapsed_since, is_gone
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]

TASKS = """
@task_manager.task
def hold(name, seconds):
    record("started", name=name)
    time.sleep(seconds)
    record("ended", name=name)


@task_manager.task
def hold_first_time(name, seconds):
    # The first attempt hangs on; a retry ends at once.
    marker = os.path.join(os.path.dirname(os.environ["CABBAGE_TEST_EVENTS"]), f"{name}.tried")
    record("started", name=name, retry=os.path.exists(marker))
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(seconds)
    record("ended", name=name)


@task_manager.task(timeout=1)
def overrun():
    record("started", name="overrun")
    time.sleep(30)
"""


def test_a_killed_child_is_replaced_and_the_lock_line_moves_on(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS)
    children = supervisor.wait_for_children(2)
    first = jobs.defer("hold", "first", 60, lock="printer")
    second = jobs.defer("hold", "second", 0, lock="printer")
    victim = supervisor.wait_for_task_event("started", name="first")["pid"]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replacements = supervisor.wait_for_children(2, timeout_s=2, excluding=[victim])
    assert elapsed_since(killed_at) < 2.5
    assert len(set(replacements) - set(children)) == 1
    job = jobs.get(first)
    assert job.status is Status.FAILED
    assert str(job.last_error) == f"WorkerLost: worker lost: process {victim} was killed by signal SIGKILL"
    supervisor.wait_for_task_event("ended", name="second")
    wait_for(lambda: jobs.status(second) is Status.SUCCEEDED, 5, "the next job of the lock to succeed")
    exited = supervisor.wait_for_event("worker_exited", child_pid=victim)
    assert exited["signal"] == "SIGKILL" and exited["level"] == "warning"
    assert [line["job_ids"] for line in supervisor.events("jobs_reclaimed")] == [[first]]


def test_a_killed_childs_job_with_retries_left_runs_again(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS)
    supervisor.wait_for_children(2)
    first = jobs.defer("hold_first_time", "first", 60, lock="printer", max_attempts=2)
    second = jobs.defer("hold", "second", 0, lock="printer")
    victim = supervisor.wait_for_task_event("started", name="first")["pid"]
    os.kill(victim, signal.SIGKILL)
    supervisor.wait_for_task_event("started", name="first", retry=True)
    wait_for(lambda: jobs.status(second) is Status.SUCCEEDED, 10, "the lock's next job, after the retry")
    job = jobs.get(first)
    assert (job.status, job.attempts) == (Status.SUCCEEDED, 2)
    reclaimed = supervisor.wait_for_event("jobs_reclaimed")
    assert reclaimed["retried_job_ids"] == [first]


def test_a_frozen_child_is_killed_reclaimed_and_replaced(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--heartbeat-timeout", "5", "--heartbeat-interval", "1")
    supervisor.wait_for_children(2)
    job_id = jobs.defer("hold", "frozen", 60)
    victim = supervisor.wait_for_task_event("started", name="frozen")["pid"]
    frozen_at = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    killed = supervisor.wait_for_event("worker_killed", timeout_s=10, child_pid=victim)
    assert killed["level"] == "error" and killed["reason"].startswith("no heartbeat for ")
    wait_for(lambda: is_gone(victim), 2, "the frozen child to be gone")
    wait_for(lambda: jobs.status(job_id) is Status.FAILED, 2, "its job to be reclaimed")
    job = jobs.get(job_id)
    assert job.last_error is not None and job.last_error.message.startswith(f"worker lost: process {victim} was killed: no heartbeat for ")
    supervisor.wait_for_children(2, timeout_s=3, excluding=[victim])
    assert elapsed_since(frozen_at) < 10


def test_a_job_past_its_timeout_gets_its_worker_killed(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS)
    supervisor.wait_for_children(2)
    job_id = jobs.defer("overrun")
    victim = supervisor.wait_for_task_event("started", name="overrun")["pid"]
    wait_for(lambda: jobs.status(job_id) is Status.FAILED, 5, "the overrunning job to fail", context=supervisor.last_log_lines)
    error = jobs.get(job_id).last_error
    assert error is not None and f"job {job_id} (acceptance_tasks.overrun) timed out after" in error.message
    assert "its task's timeout is 1 s" in error.message
    assert supervisor.events("worker_killed", child_pid=victim)
    supervisor.wait_for_children(2, excluding=[victim])


def test_children_that_die_at_start_are_respawned_with_growing_delays(start_supervisor: Start, tmp_path: Path) -> None:
    crash_in_children = """
if os.environ.get("CRASH_CHILDREN"):
    # Runs in every forked child, before it does anything: a library that breaks on fork.
    os.register_at_fork(after_in_child=lambda: os._exit(3))
"""
    supervisor = start_supervisor(TASKS + crash_in_children, env={"CRASH_CHILDREN": "1"})
    started = time.monotonic()
    wait_for(lambda: len(supervisor.events("child_respawn_delayed")) >= 4, 10, "four delayed respawns", context=supervisor.last_log_lines)
    delays = [line["delay_s"] for line in supervisor.events("child_respawn_delayed")]
    assert delays == sorted(delays) and delays[-1] > delays[0] > 0
    exits = supervisor.events("worker_exited")
    assert all(line["exit_code"] == 3 and line["reason"].endswith("exited with status 3") for line in exits)
    # No tight loop: the delays double, so a handful of forks in all, not thousands.
    assert len(exits) <= 2 * len(delays) + 2
    assert elapsed_since(started) < 10
    assert supervisor.process.poll() is None  # the master stays up through it


BROKEN_ERROR_TASKS = """
class UnshowableError(Exception):
    def __str__(self):
        raise RuntimeError("__str__ is broken")


@task_manager.task
def fragile(n):
    raise UnshowableError(n)


@task_manager.task
def after(n):
    record("after", n=n, pid=os.getpid())
"""


def test_an_exception_that_cannot_be_shown_fails_its_job_and_the_worker_goes_on(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(BROKEN_ERROR_TASKS, defaults=("--workers", "1"))
    [child] = supervisor.wait_for_children(1)
    failed = jobs.defer("fragile", 1)
    wait_for(lambda: jobs.status(failed) is Status.FAILED, 10, "the job to fail", context=supervisor.last_log_lines)
    jobs.defer("after", 2)
    ran = supervisor.wait_for_task_event("after", n=2)
    error = jobs.get(failed).last_error
    assert error is not None and error.type == "acceptance_tasks.UnshowableError"  # not WorkerLost
    assert ran["pid"] == child  # the same worker process ran the next job
    assert supervisor.children() == [child] and not supervisor.events("worker_exited")
