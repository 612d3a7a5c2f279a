"""Abort latency: how soon a running job's worker stops it after `cabbage jobs abort` (issue 14:
"within a second"), on a supervisor with --workers 2 and the default 5 s heartbeat interval.

The harness defers one job at a time of a task that polls ``should_abort()`` every millisecond,
waits until its attempt began, then aborts it through ``cabbage.admin.Admin`` (what the CLI,
the API and the job page call). The delay of each is its row's finished_at minus its
abort_requested_at, both on the database clock: from the abort's transaction to the aborted
attempt recorded, the notification, the task's next poll and the finish included. Figures:
p50, p99 and the largest, in ms. A delay near the heartbeat interval would mean the
notification was missed and the heartbeat found the request instead.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import psycopg2.extensions

from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.peers import protocol
from benchmarks.servers import cursor_on
from benchmarks.supervised import Supervisor
from cabbage.admin import Admin
from cabbage.jobs import Status

WORKERS = 2

DELAY_MS = """
SELECT extract(epoch FROM finished_at - abort_requested_at) * 1000, status
  FROM cabbage_jobs
 WHERE id = %(job_id)s
"""
STARTED = "SELECT started_at IS NOT NULL FROM cabbage_jobs WHERE id = %(job_id)s"


def run(context: RunContext) -> None:
    samples = context.scale(100, 20)
    with context.server.fresh_database("abort_latency") as dsn:
        with Supervisor(dsn, WORKERS) as supervisor:
            supervisor.wait_for_workers()
            context.say(f"abort_latency: {samples} running jobs aborted one at a time, --workers {WORKERS}")
            delays_ms = abort_one_at_a_time(dsn, samples)
    params = {"samples": samples, "workers": WORKERS, "clock": "database: finished_at - abort_requested_at"}
    for label, fraction in (("p50", 0.50), ("p99", 0.99)):
        context.figures.add(f"abort_latency_{label}", round(protocol.percentile(delays_ms, fraction), 3), "ms", **params)
    context.figures.add("abort_latency_max", round(delays_ms[-1], 3), "ms", **params)


def abort_one_at_a_time(dsn: str, samples: int) -> list[float]:
    app = make_app(dsn)
    task = app.get_task("run_until_aborted")
    admin = Admin.connect(dsn)
    delays_ms = []
    try:
        with cursor_on(dsn) as cursor:
            for _ in range(samples):
                job_id = task.defer()
                _wait_until(lambda: _fetch_one(cursor, STARTED, job_id), f"job {job_id} to start")
                admin.abort_jobs([job_id], "benchmark")
                _wait_until(lambda: _fetch_one(cursor, DELAY_MS, job_id, column=1) == Status.CANCELLED.value,
                            f"job {job_id} to end cancelled")  # fmt: skip
                delays_ms.append(float(_fetch_one(cursor, DELAY_MS, job_id)))
    finally:
        admin.close()
        app.store.close()
    return sorted(delays_ms)


def _fetch_one(cursor: psycopg2.extensions.cursor, query: str, job_id: int, column: int = 0) -> Any:
    cursor.execute(query, {"job_id": job_id})
    row = cursor.fetchone()
    return None if row is None else row[column]


def _wait_until(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"abort_latency: timed out waiting for {what}")
        time.sleep(0.001)
