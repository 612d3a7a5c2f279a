"""--retention: a running supervisor deletes jobs finished longer ago, and only those."""
from __future__ import annotations

from contextlib import closing
from typing import Callable

import psycopg2

from cabbage.jobs import Status
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]

TASKS = """
@task_manager.task
def count(n):
    record("counted", n=n)
"""


def age_jobs(dsn: str, job_ids: list[int], days: int) -> None:
    with closing(psycopg2.connect(dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute(
            "UPDATE cabbage_jobs SET finished_at = now() - make_interval(days => %s) WHERE id = ANY(%s)", (days, job_ids)
        )


def test_jobs_finished_before_the_retention_are_deleted(start_supervisor: Start, jobs: Jobs, db_dsn: str) -> None:
    supervisor = start_supervisor(TASKS, "--workers", "1")
    supervisor.wait_for_children(1)
    old, recent = jobs.defer_many("count", [[n] for n in range(3)]), jobs.defer("count", 3)
    waiting = jobs.defer("count", 4, schedule_in_s=3600)
    wait_for(lambda: jobs.counts()[Status.SUCCEEDED] == 4, 10, "four jobs to succeed", context=supervisor.last_log_lines)
    supervisor.kill_session()
    age_jobs(db_dsn, old, days=8)
    age_jobs(db_dsn, [recent], days=6)

    pruning = start_supervisor(None, "--workers", "1", "--retention", "7d")
    pruned = pruning.wait_for_event("jobs_pruned", role="master")
    assert pruned["deleted"] == 3
    assert [jobs.store.get_job(job_id) for job_id in old] == [None, None, None]
    assert jobs.status(recent) is Status.SUCCEEDED
    assert jobs.status(waiting) is Status.TODO  # never a job that has not finished
