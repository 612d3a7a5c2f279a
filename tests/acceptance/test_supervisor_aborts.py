"""`cabbage jobs abort ID` against the real supervisor: the job's worker learns it by NOTIFY, a
def task that polls stops, an async one is cancelled, one that ignores it has its process
killed after --abort-timeout; each job ends cancelled, "aborted by <who>", and is not retried."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from cabbage.jobs import Status
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]
CABBAGE = Path(sys.executable).with_name("cabbage")  # the installed command, as an operator runs it
# Heartbeats a minute apart: an abort learned within seconds came by notification.
OPTIONS = ("--workers", "2", "--heartbeat-interval", "60", "--heartbeat-timeout", "300", "--abort-timeout", "2")

TASKS = """
import asyncio

import cabbage


@task_manager.task(retry=3)
def polite(n):
    record("began", n=n, pid=os.getpid())
    while not cabbage.current_job().should_abort():
        time.sleep(0.01)
    record("stopping", n=n, by=cabbage.current_job().aborted_by)
    raise cabbage.JobAborted()


@task_manager.task(retry=3)
async def waiting(n):
    record("began", n=n, pid=os.getpid())
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        record("cancelled", n=n)
        raise


@task_manager.task(retry=3)
def stubborn(n):
    record("began", n=n, pid=os.getpid())
    time.sleep(600)


@task_manager.task
def quick(n):
    record("ran", n=n, pid=os.getpid())
"""


def abort(dsn: str, job_id: int, by: str = "alice") -> None:
    result = subprocess.run(
        [str(CABBAGE), "jobs", "abort", str(job_id), "--by", by],
        env={**os.environ, "CABBAGE_DSN": dsn}, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"to stop them: {job_id}" in result.stdout


def assert_aborted(jobs: Jobs, job_id: int, by: str, supervisor: SupervisorProcess) -> None:
    job = wait_for(lambda: jobs.status(job_id) is Status.CANCELLED and jobs.get(job_id), 30, f"job {job_id} to end cancelled",
                   context=supervisor.last_log_lines)  # fmt: skip
    assert job.last_error is not None and str(job.last_error) == f"Aborted: aborted by {by}"
    assert job.attempts == 1, "an aborted job is not retried"


def test_a_polling_task_stops_and_its_worker_runs_on(start_supervisor: Start, jobs: Jobs, db_dsn: str) -> None:
    supervisor = start_supervisor(TASKS, defaults=OPTIONS)
    supervisor.wait_for_children(2)
    job_id = jobs.defer("polite", 1, max_attempts=3)
    began = supervisor.wait_for_task_event("began", n=1)
    abort(db_dsn, job_id)
    assert supervisor.wait_for_task_event("stopping", n=1)["by"] == "alice"
    assert_aborted(jobs, job_id, "alice", supervisor)
    assert supervisor.events("job_abort_requested", job_id=job_id)
    assert not supervisor.events("worker_killed"), "a task that stopped costs no process"
    jobs.defer_many("quick", [[n] for n in range(4)])
    wait_for(lambda: len(supervisor.task_events("ran")) == 4, 30, "the next jobs", context=supervisor.last_log_lines)
    assert began["pid"] in supervisor.children()


def test_an_async_task_is_cancelled(start_supervisor: Start, jobs: Jobs, db_dsn: str) -> None:
    supervisor = start_supervisor(TASKS, "--concurrency", "4", defaults=OPTIONS)
    supervisor.wait_for_children(2)
    job_id = jobs.defer("waiting", 1, max_attempts=3)
    supervisor.wait_for_task_event("began", n=1)
    abort(db_dsn, job_id, "bob@ops")
    supervisor.wait_for_task_event("cancelled", n=1)
    assert_aborted(jobs, job_id, "bob@ops", supervisor)
    assert not supervisor.events("worker_killed")


def test_a_task_that_ignores_the_abort_has_its_process_killed_after_the_abort_timeout(
    start_supervisor: Start, jobs: Jobs, db_dsn: str
) -> None:
    supervisor = start_supervisor(TASKS, defaults=OPTIONS)
    supervisor.wait_for_children(2)
    job_id = jobs.defer("stubborn", 1, max_attempts=3)
    began = supervisor.wait_for_task_event("began", n=1)
    abort(db_dsn, job_id)
    killed = supervisor.wait_for_event("worker_killed", timeout_s=30)
    assert killed["child_pid"] == began["pid"]
    assert f"job {job_id} ({jobs.get(job_id).task_name}) was aborted by alice" in killed["reason"]
    assert_aborted(jobs, job_id, "alice", supervisor)
    # The supervisor replaces the child and goes on.
    supervisor.wait_for_children(2, excluding=[began["pid"]])
    jobs.defer_many("quick", [[n] for n in range(4)])
    wait_for(lambda: len(supervisor.task_events("ran")) == 4, 30, "the next jobs", context=supervisor.last_log_lines)
