"""Workers of a host that died: any running supervisor reclaims their jobs, once, however many race."""
from __future__ import annotations

import time
from contextlib import closing
from typing import Callable

import psycopg2

from cabbage.jobs import Status
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]
TIMEOUT_S, INTERVAL_S = 3, 1
OPTIONS = ("--heartbeat-timeout", str(TIMEOUT_S), "--heartbeat-interval", str(INTERVAL_S))

TASKS = """
@task_manager.task
def print_page(page):
    record("printed", page=page)
"""


def a_host_dies_holding_a_job(dsn: str, lock: str) -> tuple[int, int]:
    """Inserts, as plain SQL, a worker of another host that heartbeats no more and its doing job."""
    with closing(psycopg2.connect(dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO cabbage_workers (hostname, pid, last_heartbeat_at) VALUES ('dead-host', 4242, now()) RETURNING id"
        )
        (worker_id,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO cabbage_jobs (queue, task_name, args, lock, status, attempts, max_attempts, worker_id, started_at)"
            " VALUES ('default', 'acceptance_tasks.print_page', '[1]', %s, 'doing', 1, 1, %s, now()) RETURNING id",
            (lock, worker_id),
        )
        (job_id,) = cursor.fetchone()
    return worker_id, job_id


def test_a_running_supervisor_reclaims_a_dead_hosts_job(start_supervisor: Start, jobs: Jobs, db_dsn: str) -> None:
    supervisor = start_supervisor(TASKS, *OPTIONS)
    supervisor.wait_for_children(2)
    worker_id, job_id = a_host_dies_holding_a_job(db_dsn, lock="printer")
    died_at = time.monotonic()
    waiting = jobs.defer("print_page", 2, lock="printer")  # queued behind the lost job
    wait_for(lambda: jobs.status(job_id) is Status.FAILED, TIMEOUT_S + INTERVAL_S + 2, "the dead host's job to be reclaimed")
    assert time.monotonic() - died_at >= TIMEOUT_S - 0.5  # not before its heartbeat was stale
    assert str(jobs.get(job_id).last_error) == f"WorkerLost: worker lost: no heartbeat for {TIMEOUT_S} s"
    reclaimed = supervisor.wait_for_event("jobs_reclaimed")
    assert (reclaimed["job_ids"], reclaimed["worker_ids"], reclaimed["failed_job_ids"]) == ([job_id], [worker_id], [job_id])
    # Its lock is free again: the next job of the line runs.
    wait_for(lambda: jobs.status(waiting) is Status.SUCCEEDED, 5, "the lock's next job to run")


def test_two_supervisors_reclaim_it_once(start_supervisor: Start, jobs: Jobs, db_dsn: str) -> None:
    first = start_supervisor(TASKS, *OPTIONS, "--workers", "1")
    second = start_supervisor(None, *OPTIONS, "--workers", "1")
    first.wait_for_children(1)
    second.wait_for_children(1)
    _, job_id = a_host_dies_holding_a_job(db_dsn, lock="printer")
    wait_for(lambda: jobs.status(job_id) is Status.FAILED, TIMEOUT_S + INTERVAL_S + 2, "the dead host's job to be reclaimed")
    # Both masters check every interval: let each run two more checks after the reclaim.
    time.sleep(2 * INTERVAL_S + 0.5)
    reclaims = [line for supervisor in (first, second) for line in supervisor.events("jobs_reclaimed") if job_id in line["job_ids"]]
    assert len(reclaims) == 1
