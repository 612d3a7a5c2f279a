"""PostgreSQL restarted under a running supervisor: no job lost or stuck, work resumes by itself."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest

from devdb.cluster import PrivateCluster
from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import Status
from cabbage.schema import apply_schema
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]
JOBS = 60

TASKS = """
@task_manager.task
def work(n):
    time.sleep(0.05)
    record("worked", n=n)
"""


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL of this test's own, so that it can be restarted."""
    cluster = PrivateCluster.create(base_dir=None, durable=False)
    try:
        cluster.start()
        cluster.create_database("cabbage_restart")
        apply_schema(cluster.dsn("cabbage_restart"))
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.timeout(120)
def test_a_database_restart_loses_no_job(start_supervisor: Start, cluster: PrivateCluster) -> None:
    dsn = cluster.dsn("cabbage_restart")
    supervisor = start_supervisor(TASKS, dsn=dsn)
    supervisor.wait_for_children(2)
    jobs = Jobs(dsn)
    # Retries allowed: an attempt whose outcome the outage swallowed runs again.
    job_ids = jobs.defer_many("work", [[n] for n in range(JOBS)], max_attempts=5)
    wait_for(lambda: len(supervisor.task_events("worked")) >= 10, 10, "jobs to flow", context=supervisor.last_log_lines)

    cluster.restart()

    supervisor.wait_for_event("database_unreachable", timeout_s=10, role="master")
    supervisor.wait_for_event("database_reconnected", timeout_s=20, role="master")

    def defer_more() -> list[int] | None:
        try:
            return jobs.defer_many("work", [[n] for n in range(JOBS, JOBS + 5)], max_attempts=5)
        except DatabaseUnavailable:
            return None  # our own connection was cut by the restart too: the next call reconnects

    later = wait_for(defer_more, 10, "deferring more jobs after the restart")

    def counts() -> dict[Status, int] | None:
        try:
            return jobs.counts()
        except DatabaseUnavailable:
            return None

    final = wait_for(
        lambda: (found := counts()) is not None and found[Status.SUCCEEDED] == JOBS + 5 and found,
        30,
        "every job, old and new, to succeed",
        context=supervisor.last_log_lines,
    )
    assert final[Status.TODO] == final[Status.DOING] == final[Status.FAILED] == 0
    assert {event["n"] for event in supervisor.task_events("worked")} == set(range(JOBS + 5))
    assert len(job_ids) + len(later) == JOBS + 5
    assert len(supervisor.events("database_unreachable", role="master")) == 1
    assert len(supervisor.events("database_reconnected", role="master")) == 1
    assert supervisor.process.poll() is None
    jobs.close()
