"""cabbage-supervisor and scheduled jobs: an idle supervisor starts a job when it is due, not at
its workers' next poll."""
from __future__ import annotations

from typing import Callable

from cabbage.jobs import Status
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess
from tests.waiting import wait_for

TASKS = """
@task_manager.task
def count(n):
    record("counted", n=n)
"""

POLL_INTERVAL_S = 30

Start = Callable[..., SupervisorProcess]


def test_a_job_scheduled_ahead_starts_on_an_idle_supervisor_before_any_poll(start_supervisor: Start, jobs: Jobs) -> None:
    supervisor = start_supervisor(TASKS, "--poll-interval", str(POLL_INTERVAL_S))
    supervisor.wait_for_children(2)
    wait_for(lambda: len(supervisor.events("worker_started")) == 2, 10, "both workers to start", context=supervisor.last_log_lines)
    job_id = jobs.defer("count", 1, schedule_in_s=2.0)
    # Its defer woke the idle workers; had they waited for their poll, nothing would claim it
    # before 30 s from then.
    job = wait_for(
        lambda: (job := jobs.get(job_id)).status is Status.SUCCEEDED and job,
        POLL_INTERVAL_S - 10,
        "the job scheduled 2 s ahead to run, before a worker's poll could have claimed it",
        context=supervisor.last_log_lines,
    )
    assert job.started_at is not None and job.started_at >= job.scheduled_at, "never before it is due (database clock)"
    assert [event["n"] for event in supervisor.task_events("counted")] == [1]
