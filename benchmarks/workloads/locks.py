"""Locks: 20,000 jobs over 10 locks drained by --workers 8.

Jobs per second (first start to last finish, database clock), then the invariants checked
from the rows themselves: per lock, a job that started before the previous one finished is an
overlap (invariant 1, must be 0), and a job that started before an older job of its lock is out
of order (invariant 2, must be 0).
"""
from __future__ import annotations

from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.servers import cursor_on
from benchmarks.supervised import Supervisor
from benchmarks.workloads.throughput import drain_rate

LOCKS = 10
WORKERS = 8

# Per lock, in start order: the previous job's finish and id, from the window functions.
CHECK_LINES = """
SELECT count(*) FILTER (WHERE started_at < previous_finished_at) AS overlaps,
       count(*) FILTER (WHERE id < previous_id) AS out_of_order
  FROM (SELECT id, started_at,
               lag(finished_at) OVER line AS previous_finished_at,
               lag(id) OVER line AS previous_id
          FROM cabbage_jobs
         WHERE lock IS NOT NULL
        WINDOW line AS (PARTITION BY lock ORDER BY started_at, id)) AS lines
"""


def run(context: RunContext) -> None:
    jobs = context.scale(20_000, 2_000)
    with context.server.fresh_database("locks") as dsn:
        context.say(f"locks: {jobs} jobs over {LOCKS} locks, --workers {WORKERS}")
        defer_locked_noops(dsn, jobs)
        with Supervisor(dsn, WORKERS) as supervisor:
            supervisor.wait_until_drained(jobs, timeout_s=600)
        rate, _ = drain_rate(dsn)
        with cursor_on(dsn) as cursor:
            cursor.execute(CHECK_LINES)
            overlaps, out_of_order = cursor.fetchone()
    params = {"jobs": jobs, "locks": LOCKS, "workers": WORKERS}
    context.figures.add("locks_throughput", rate, "jobs/s", **params)
    context.figures.add("locks_overlaps", overlaps, "jobs", **params)
    context.figures.add("locks_out_of_order", out_of_order, "jobs", **params)


def defer_locked_noops(dsn: str, jobs: int) -> None:
    """jobs / 10 jobs on each lock, one defer_many per lock: every line is full from the start."""
    app = make_app(dsn)
    noop = app.get_task("noop")
    for number in range(LOCKS):
        noop.configure(lock=f"lock-{number}").defer_many([[] for _ in range(jobs // LOCKS)])
    app.store.close()
