"""cabbage-supervisor from start to stop: process titles, jobs flowing, graceful and fast stops, a dead master."""
from __future__ import annotations

import re
import signal
import time
from typing import Callable

from cabbage.jobs import Status
from supervisor import exit_codes
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, elapsed_since, is_gone
from tests.waiting import wait_for

TASKS = """
@task_manager.task
def count(n):
    record("counted", n=n)


@task_manager.task
def sleep_for(seconds):
    record("sleep_started", seconds=seconds)
    time.sleep(seconds)
    record("sleep_ended", seconds=seconds)
"""

Start = Callable[..., SupervisorProcess]


def test_four_workers_show_their_titles_and_run_200_jobs(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--workers", "4")
    children = supervisor.wait_for_children(4)
    wait_for(
        lambda: supervisor.titles()
        == {
            supervisor.pid: "cabbage-supervisor: master acceptance_tasks (4 workers)",
            **{pid: f"cabbage-supervisor: worker {number} idle" for pid, number in _worker_numbers(supervisor, children).items()},
        },
        10,
        "one master and four idle workers in ps",
        context=supervisor.last_log_lines,
    )
    assert sorted(_worker_numbers(supervisor, children).values()) == [1, 2, 3, 4]

    job_ids = jobs.defer_many("count", [[n] for n in range(200)])
    wait_for(lambda: jobs.counts()[Status.SUCCEEDED] == 200, 20, "200 jobs to succeed", context=supervisor.last_log_lines)
    assert sorted(event["n"] for event in supervisor.task_events("counted")) == list(range(200))
    assert {line["job_id"] for line in supervisor.events("job_succeeded")} == set(job_ids)
    assert {line["pid"] for line in supervisor.events("job_succeeded")} <= set(children)

    sleeping = jobs.defer("sleep_for", 3)
    running = re.compile(rf"cabbage-supervisor: worker [1-4] running acceptance_tasks\.sleep_for job={sleeping}")
    wait_for(lambda: any(running.fullmatch(title) for title in supervisor.titles().values()), 10, "a worker's title to show its job")


def test_sigterm_lets_the_running_job_finish(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS)
    children = supervisor.wait_for_children(2)
    job_id = jobs.defer("sleep_for", 3)
    supervisor.wait_for_task_event("sleep_started")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit(15) == exit_codes.EXIT_OK
    assert jobs.get(job_id).status is Status.SUCCEEDED
    assert supervisor.task_events("sleep_ended")
    assert all(is_gone(pid) for pid in children)
    assert supervisor.events("supervisor_stopping", mode="graceful")
    assert supervisor.events("supervisor_stopped", exit_code=0)


def test_after_the_graceful_timeout_the_rest_are_killed_and_reclaimed(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--graceful-timeout", "2")
    supervisor.wait_for_children(2)
    job_id = jobs.defer("sleep_for", 60)
    supervisor.wait_for_task_event("sleep_started")
    stopped_at = time.monotonic()
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit(10) == exit_codes.EXIT_OK
    assert elapsed_since(stopped_at) < 4.5
    job = jobs.get(job_id)
    assert job.status is Status.FAILED
    assert job.last_error is not None and "did not stop within the graceful timeout of 2 s" in job.last_error.message
    assert [line["job_ids"] for line in supervisor.events("jobs_reclaimed")] == [[job_id]]


def test_a_second_sigterm_stops_at_once(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS)
    supervisor.wait_for_children(2)
    job_id = jobs.defer("sleep_for", 60)
    supervisor.wait_for_task_event("sleep_started")
    stopped_at = time.monotonic()
    supervisor.send(signal.SIGTERM)
    supervisor.wait_for_event("supervisor_stopping", mode="graceful")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit(10) == exit_codes.EXIT_OK
    assert elapsed_since(stopped_at) < 3
    assert supervisor.events("supervisor_stopping", mode="fast")
    assert jobs.get(job_id).status is Status.FAILED


def test_sigkill_of_the_master_takes_every_child_down(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS)
    children = supervisor.wait_for_children(2)
    job_id = jobs.defer("sleep_for", 60)
    supervisor.wait_for_task_event("sleep_started")
    supervisor.send(signal.SIGKILL)
    wait_for(lambda: all(is_gone(pid) for pid in children), 5, "every child to exit after its master died")
    # The child running the job gave it back before exiting.
    wait_for(lambda: jobs.get(job_id).status is Status.FAILED, 5, "the orphaned job to be reclaimed")
    assert "its master died" in str(jobs.get(job_id).last_error)


def test_an_app_that_cannot_be_imported_stops_the_supervisor_at_once(start_supervisor: Start) -> None:
    started = time.monotonic()
    supervisor = start_supervisor(None, app="does.not.exist")
    assert supervisor.wait_exit(10) == exit_codes.EXIT_APP_IMPORT
    assert elapsed_since(started) < 2
    failure = supervisor.wait_for_event("app_import_failed")
    assert failure["level"] == "critical"
    assert failure["error"] == "cannot import app 'does.not.exist': No module named 'does'"
    assert failure["exception"]  # the traceback, as structured data


def _worker_numbers(supervisor: SupervisorProcess, pids: list[int]) -> dict[int, int]:
    numbers = {line["pid"]: line["worker_number"] for line in supervisor.events("worker_started")}
    return {pid: numbers[pid] for pid in pids}


def test_max_jobs_per_child_recycles_workers_without_backoff(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--workers", "1", "--max-jobs-per-child", "3", "--batch-size", "2")
    supervisor.wait_for_children(1)
    jobs.defer_many("count", [[n] for n in range(9)])
    wait_for(lambda: jobs.counts()[Status.SUCCEEDED] == 9, 15, "nine jobs to succeed", context=supervisor.last_log_lines)
    runners = [event["pid"] for event in sorted(supervisor.task_events("counted"), key=lambda event: event["n"])]
    assert [len(set(runners[start : start + 3])) for start in (0, 3, 6)] == [1, 1, 1]
    assert len(set(runners)) == 3  # three processes, three jobs each
    recycled = [line for line in supervisor.events("worker_exited", role="master") if line["child_pid"] in runners[:6]]
    assert [line["exit_code"] for line in recycled] == [0, 0]
    assert not supervisor.events("child_respawn_delayed")
    assert not supervisor.events("jobs_reclaimed")


def test_batches_without_synchronous_commit_run_every_job_once(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--workers", "2", "--batch-size", "5", "--synchronous-commit", "off")
    supervisor.wait_for_children(2)
    jobs.defer_many("count", [[n] for n in range(40)])
    wait_for(lambda: jobs.counts()[Status.SUCCEEDED] == 40, 15, "forty jobs to succeed", context=supervisor.last_log_lines)
    assert sorted(event["n"] for event in supervisor.task_events("counted")) == list(range(40))
    assert not supervisor.events("job_fence_lost")
