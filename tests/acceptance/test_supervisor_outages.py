"""Database outages, crashes, terminated sessions, locks and connection limits under a running
supervisor: a finished job's outcome is never lost and no job runs twice when the outage is
shorter than the heartbeat timeout; longer ones never run two attempts of a lock at once.

Every job here has one attempt only (``max_attempts=1``), so an outcome the outage had changed
(a job reclaimed as lost) would show as a failed job, and a job run twice as two events.
"""
from __future__ import annotations

import datetime
import time
from contextlib import closing
from typing import Any, Callable, Iterator

import psycopg2
import pytest

from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import Status
from devdb.cluster import PrivateCluster
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, cluster_with_schema
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]
HEARTBEAT = ("--heartbeat-interval", "1", "--heartbeat-timeout", "5")
TIMEOUT_S = 5.0
DATABASE = "cabbage_outage"

TASKS = """
@task_manager.task
def work(n, seconds=0.05):
    started = time.time()
    time.sleep(seconds)
    record("worked", n=n, start=started, end=time.time())
"""


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL of this test's own, durable (a crash loses no commit), to restart and break."""
    yield from _cluster()


def _cluster(**options: Any) -> Iterator[PrivateCluster]:
    yield from cluster_with_schema(DATABASE, **options)


def answered(call: Callable[[], Any]) -> Any:
    """The call's answer, or None while our own connection is cut by the outage too."""
    try:
        return call()
    except DatabaseUnavailable:
        return None


def wait_until_all_succeeded(jobs: Jobs, count: int, supervisor: SupervisorProcess, timeout_s: float = 60) -> dict[Status, int]:
    return wait_for(
        lambda: (found := answered(jobs.counts)) is not None and found[Status.SUCCEEDED] + found[Status.FAILED] >= count and found,
        timeout_s,
        f"all {count} jobs to end",
        context=supervisor.last_log_lines,
    )


def assert_each_ran_once_and_succeeded(supervisor: SupervisorProcess, jobs: Jobs, count: int) -> None:
    counts = wait_until_all_succeeded(jobs, count, supervisor)
    assert counts[Status.SUCCEEDED] == count, f"outcomes changed: {counts}\n{supervisor.last_log_lines()}"
    runs = [event["n"] for event in supervisor.task_events("worked")]
    assert sorted(runs) == list(range(count)), "a job ran twice, or not at all"
    assert not supervisor.events("jobs_reclaimed")
    assert not supervisor.events("worker_killed")
    assert not [line for line in supervisor.events("worker_exited") if line.get("exit_code") == 75]


def start_flowing(start_supervisor: Start, dsn: str, count: int, *options: str) -> tuple[SupervisorProcess, Jobs]:
    supervisor = start_supervisor(TASKS, *HEARTBEAT, *options, dsn=dsn)
    supervisor.wait_for_children(2)
    jobs = Jobs(dsn)
    jobs.defer_many("work", [[n] for n in range(count)], max_attempts=1)
    wait_for(lambda: len(supervisor.task_events("worked")) >= 20, 20, "jobs to flow", context=supervisor.last_log_lines)
    return supervisor, jobs


@pytest.mark.timeout(120)
def test_a_fast_restart_under_load_changes_no_outcome(start_supervisor: Start, cluster: PrivateCluster) -> None:
    supervisor, jobs = start_flowing(start_supervisor, cluster.dsn(DATABASE), 300)
    cluster.restart()  # fast shutdown: sessions are ended, then the server starts again
    assert_each_ran_once_and_succeeded(supervisor, jobs, 300)
    assert supervisor.process.poll() is None
    jobs.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "options",
    [(), ("--concurrency", "4", "--prefetch", "4"), ("--prefetch", "4")],
    ids=["one at a time", "4 at once, prefetch 4", "one at a time, prefetch 4"],
)
def test_a_crash_and_its_recovery_under_load_change_no_outcome(
    start_supervisor: Start, cluster: PrivateCluster, options: tuple[str, ...]
) -> None:
    # With a prefetch, outcomes are on their way on the recorder's thread while prefetched jobs
    # run: the crash finds some sent, some waiting to be, and held jobs not begun.
    supervisor, jobs = start_flowing(start_supervisor, cluster.dsn(DATABASE), 300, *options)
    cluster.crash()  # immediate shutdown: the next start runs crash recovery
    time.sleep(0.5)  # the outage itself, not an assertion
    cluster.start()
    assert_each_ran_once_and_succeeded(supervisor, jobs, 300)
    jobs.close()


@pytest.mark.timeout(120)
def test_terminated_sessions_of_busy_and_idle_workers_change_no_outcome(start_supervisor: Start, cluster: PrivateCluster) -> None:
    dsn = cluster.dsn(DATABASE)
    supervisor, jobs = start_flowing(start_supervisor, dsn, 200)
    terminated = terminate_worker_sessions(dsn)
    assert terminated >= 2
    assert_each_ran_once_and_succeeded(supervisor, jobs, 200)

    # Idle now: their sessions wait in LISTEN. Ended too, the workers connect again and listen
    # on the new sessions, so a job deferred next starts on its notification, long before the
    # 5 s poll would find it.
    before = wait_for(lambda: len(found := worker_sessions(dsn)) == 2 and found, 10, "a session per worker", context=supervisor.last_log_lines)
    terminate_worker_sessions(dsn)
    wait_for(lambda: len(found := worker_sessions(dsn)) == 2 and not found & before, 10, "both workers on new sessions",
             context=supervisor.last_log_lines)  # fmt: skip
    time.sleep(0.5)  # lets each finish its claim and begin to wait: the state under test
    jobs.defer("work", 200)
    wait_for(lambda: supervisor.task_events("worked", n=200), 3, "the job deferred after the reconnect", context=supervisor.last_log_lines)
    jobs.close()


def terminate_worker_sessions(dsn: str) -> int:
    """Ends every session of the workers (the test's own sessions are named otherwise)."""
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name IN ('cabbage-worker', 'cabbage-heartbeat')"
        )
        return cursor.fetchone()[0]


def worker_sessions(dsn: str) -> set[int]:
    """The backend pids of the workers' loops (where they LISTEN)."""
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'cabbage-worker'")
        return {pid for (pid,) in cursor.fetchall()}


@pytest.mark.timeout(120)
def test_the_jobs_table_locked_for_twice_the_timeout_declares_no_live_worker_dead(
    start_supervisor: Start, cluster: PrivateCluster
) -> None:
    dsn = cluster.dsn(DATABASE)
    supervisor, jobs = start_flowing(start_supervisor, dsn, 200)
    with closing(psycopg2.connect(dsn)) as locker:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLE cabbage_jobs IN ACCESS EXCLUSIVE MODE")
        supervisor.wait_for_event("database_busy", timeout_s=10, role="master")
        time.sleep(2 * TIMEOUT_S)  # the lock is held this long: the condition under test
        locker.rollback()
    assert_each_ran_once_and_succeeded(supervisor, jobs, 200)
    assert len(supervisor.events("database_busy", role="master")) == 1
    jobs.close()


LOCKED_TASKS = """
@task_manager.task
def hold(n, seconds):
    started = time.time()
    record("began", n=n, start=started)
    time.sleep(seconds)
    record("worked", n=n, start=started, end=time.time())
"""


@pytest.mark.timeout(150)
def test_an_outage_of_twice_the_timeout_never_runs_two_attempts_of_a_lock_at_once(
    start_supervisor: Start, cluster: PrivateCluster
) -> None:
    dsn = cluster.dsn(DATABASE)
    supervisor = start_supervisor(LOCKED_TASKS, *HEARTBEAT, dsn=dsn)
    supervisor.wait_for_children(2)
    jobs = Jobs(dsn)
    # Each job runs 6 s: longer than the running one's lease (5 s from its last heartbeat).
    job_ids = jobs.defer_many("hold", [[n, 6.0] for n in range(4)], lock="L", max_attempts=3)
    supervisor.wait_for_task_event("began", n=0, timeout_s=10)
    cluster.stop()
    time.sleep(2 * TIMEOUT_S)  # the outage: longer than the lease of the running job
    cluster.start()

    final = wait_for(
        lambda: (found := answered(jobs.counts)) is not None and found[Status.SUCCEEDED] == 4 and found,
        90, "every job of the lock to succeed, re-run ones included", context=supervisor.last_log_lines,
    )  # fmt: skip
    assert final[Status.FAILED] == 0
    # The running job's child was killed before its lease ended; its attempt is run again.
    killed = supervisor.events("worker_killed")
    assert killed and "stopped before its lease" in killed[0]["reason"]
    assert jobs.get(job_ids[0]).attempts == 2
    # Runs of the lock's jobs, by the tasks' own clocks: never two at once, in creation order.
    runs = sorted((event["start"], event["end"], event["n"]) for event in supervisor.task_events("worked"))
    assert [n for _, _, n in runs] == [0, 1, 2, 3]
    began = sorted(event["start"] for event in supervisor.task_events("began"))
    for (_, end, _), next_start in zip(runs, began[2:]):  # began[0:2]: the killed attempt and its re-run
        assert next_start >= end
    killed_at = datetime.datetime.fromisoformat(killed[0]["timestamp"].replace("Z", "+00:00")).timestamp()
    assert began[0] < killed_at < began[1]  # the first attempt was killed before the re-run began
    jobs.close()


@pytest.fixture
def small_cluster() -> Iterator[PrivateCluster]:
    """Too few connection slots for the supervisor asked to run: 8 for every session."""
    yield from _cluster(settings=("max_connections = 8", "superuser_reserved_connections = 0"))


@pytest.mark.timeout(120)
def test_fewer_connection_slots_than_workers_is_said_once_and_the_others_go_on(
    start_supervisor: Start, small_cluster: PrivateCluster
) -> None:
    dsn = small_cluster.dsn(DATABASE)
    jobs = Jobs(dsn)
    jobs.defer_many("work", [[n] for n in range(100)], max_attempts=1)
    # 6 workers want 12 sessions and the master 1: the server has 8, one of them ours.
    supervisor = start_supervisor(TASKS, *HEARTBEAT, "--workers", "6", dsn=dsn)
    exhausted = supervisor.wait_for_event("database_connections_exhausted", timeout_s=20, role="master")
    assert "max_connections=8" in exhausted["limits"]
    assert "fewer workers" in exhausted["advice"] and "pooler in session mode" in exhausted["advice"]
    assert_each_ran_once_and_succeeded(supervisor, jobs, 100)
    # Children refused a slot are respawned later and later, not in a tight loop.
    wait_for(lambda: [line for line in supervisor.events("child_respawn_delayed") if line["delay_s"] >= 2], 40,
             "the respawn delay to grow", context=supervisor.last_log_lines)  # fmt: skip
    delays = [line["delay_s"] for line in supervisor.events("child_respawn_delayed")]
    assert delays == sorted(delays)
    assert len(supervisor.events("database_connections_exhausted", role="master")) == 1
    assert not [line for line in supervisor.logs if line.get("role") == "worker" and line["event"] == "database_unreachable"]
    jobs.close()


TIMEOUT_TASKS = """
@task_manager.task(timeout=1.0)
def overrun(n):
    record("began", n=n)
    time.sleep(1.3)
    record("finished", n=n)
"""


@pytest.mark.timeout(90)
def test_a_jobs_timeout_is_enforced_at_its_deadline_not_at_the_next_heartbeat_check(
    start_supervisor: Start, jobs: Jobs
) -> None:
    # With checks every 5 s a job 0.3 s past its timeout would often finish first.
    supervisor = start_supervisor(TIMEOUT_TASKS, "--heartbeat-interval", "5", "--heartbeat-timeout", "30", defaults=("--workers", "2"))
    job_ids = jobs.defer_many("overrun", [[n] for n in range(6)])
    wait_for(lambda: all(jobs.status(job_id) is Status.FAILED for job_id in job_ids), 60, "every job to fail", context=supervisor.last_log_lines)
    assert supervisor.task_events("finished") == []
    for job_id in job_ids:
        error = jobs.get(job_id).last_error
        assert error is not None and error.type == "WorkerLost" and "timed out after" in error.message
