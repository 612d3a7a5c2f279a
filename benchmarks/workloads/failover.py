"""Failover: PostgreSQL restarted, crashed or stopped for a few seconds under a running
supervisor, with jobs flowing; how long work takes to resume, and what the outage changed.

For each outage, on a private durable cluster of its own (the one it breaks): 2 workers run
jobs of 20 ms (one attempt each, so an outcome the outage changed shows as a failed job) while
the database goes away; then, from the moment it accepts sessions again, the time until the
first job ends (by the tasks' own clock), the outcomes changed (jobs not succeeded: must be 0)
and the jobs run twice (must be 0: every outage here is shorter than the heartbeat timeout).
"""
from __future__ import annotations

import collections
import os
import tempfile
import time
from collections.abc import Callable

from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.peers import protocol
from benchmarks.servers import cursor_on
from benchmarks.supervised import Supervisor
from cabbage.schema import apply_schema
from devdb.cluster import PrivateCluster

TASK_S = 0.02
HEARTBEAT = ("--heartbeat-interval", "2", "--heartbeat-timeout", "10")
WORKERS = 2


def _restart(cluster: PrivateCluster) -> None:
    cluster.restart()  # fast shutdown, then a start


def _crash(cluster: PrivateCluster) -> None:
    cluster.crash()  # immediate shutdown: the start runs crash recovery
    cluster.start()


def _down_3s(cluster: PrivateCluster) -> None:
    cluster.stop()
    time.sleep(3.0)
    cluster.start()


OUTAGES: dict[str, Callable[[PrivateCluster], None]] = {"restart": _restart, "crash": _crash, "down_3s": _down_3s}


def run(context: RunContext) -> None:
    jobs = context.scale(3_000, 1_000)
    for outage, make_outage in OUTAGES.items():
        context.say(f"failover: {outage}, {jobs} jobs of {TASK_S * 1000:.0f} ms, --workers {WORKERS}")
        first_finish_s, changed, run_twice = _measure(jobs, make_outage)
        params = {"outage": outage, "jobs": jobs, "workers": WORKERS, "heartbeat_timeout_s": 10}
        context.figures.add(f"failover_{outage}_first_finish_s", round(first_finish_s, 3), "s", **params,
                            clock="from the database accepting sessions to the first job ending, time.time()")  # fmt: skip
        context.figures.add(f"failover_{outage}_outcomes_changed", changed, "jobs", **params)
        context.figures.add(f"failover_{outage}_jobs_run_twice", run_twice, "jobs", **params)


def _measure(jobs: int, make_outage: Callable[[PrivateCluster], None]) -> tuple[float, int, int]:
    cluster = PrivateCluster.create(durable=True)
    try:
        cluster.start()
        cluster.create_database("failover")
        dsn = cluster.dsn("failover")
        apply_schema(dsn)
        with tempfile.TemporaryDirectory() as folder:
            runs_path = os.path.join(folder, "runs")
            app = make_app(dsn)
            app.get_task("hold_and_record").defer_many([[f"job-{n}", TASK_S] for n in range(jobs)])
            app.store.close()
            environment = {protocol.RUNS_FILE_VARIABLE: runs_path}
            with Supervisor(dsn, WORKERS, environment=environment, options=HEARTBEAT) as supervisor:
                supervisor.wait_for_workers()
                _wait_for_runs(runs_path, jobs // 5)
                make_outage(cluster)
                back_at = time.time()
                supervisor.wait_until_drained(jobs, timeout_s=300)
            runs = _read_runs(runs_path)
        with cursor_on(dsn) as cursor:
            cursor.execute("SELECT count(*) FILTER (WHERE status <> 'succeeded') FROM cabbage_jobs")
            (changed,) = cursor.fetchone()
    finally:
        cluster.destroy()
    first_end = min(end for _, _, end in runs if end >= back_at)
    run_twice = sum(count - 1 for count in collections.Counter(line for line, _, _ in runs).values() if count > 1)
    return first_end - back_at, changed, run_twice


def _wait_for_runs(path: str, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path) and len(_read_runs(path)) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {count} jobs ran in {timeout_s:.0f} s")


def _read_runs(path: str) -> list[tuple[str, float, float]]:
    runs = []
    with open(path) as lines:
        for line in lines:
            name, started, ended = line.split()
            runs.append((name, float(started), float(ended)))
    return runs
