"""Locks: 20,000 jobs over 10 locks drained by --workers 8.

Jobs per second (first start to last finish, database clock), then the invariants, per lock:
a job that started before the previous one finished is an overlap (invariant 1, must be 0), a
job that started before an older job of its lock is out of order (invariant 2, must be 0).

Overlaps are counted twice. From the task's own clock: each task records when it started and
ended (time.time(), one host), which is when it really ran. And from the rows' started_at and
finished_at, as the issue asks; but those are now(), the start of each statement's transaction,
taken before the statement's snapshot: a claim whose transaction began just before the previous
job's finish began can see that finish committed and start the next job, so the rows can show
an overlap of a fraction of a millisecond that never happened (the unique index
cabbage_jobs_one_doing_per_lock forbids two doing jobs of a lock). The largest such overlap is
reported with the count.
"""
from __future__ import annotations

import collections
import itertools
import os
import tempfile

from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.peers import protocol
from benchmarks.servers import cursor_on
from benchmarks.supervised import Supervisor
from benchmarks.workloads.throughput import drain_rate

LOCKS = 10
WORKERS = 8

# Per lock, in start order: the previous job's finish and id, from the window functions.
CHECK_LINES = """
SELECT count(*) FILTER (WHERE started_at < previous_finished_at) AS overlaps,
       coalesce(extract(epoch FROM max(previous_finished_at - started_at)
                                   FILTER (WHERE started_at < previous_finished_at)) * 1000, 0) AS overlap_ms,
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
    with context.server.fresh_database("locks") as dsn, tempfile.TemporaryDirectory() as folder:
        context.say(f"locks: {jobs} jobs over {LOCKS} locks, --workers {WORKERS}")
        runs_path = os.path.join(folder, "runs")
        defer_locked_jobs(dsn, jobs)
        with Supervisor(dsn, WORKERS, environment={protocol.RUNS_FILE_VARIABLE: runs_path}) as supervisor:
            supervisor.wait_until_drained(jobs, timeout_s=600)
        rate, _ = drain_rate(dsn)
        with cursor_on(dsn) as cursor:
            cursor.execute(CHECK_LINES)
            db_overlaps, db_overlap_ms, out_of_order = cursor.fetchone()
        task_overlaps = count_task_overlaps(runs_path)
    params = {"jobs": jobs, "locks": LOCKS, "workers": WORKERS}
    context.figures.add("locks_throughput", rate, "jobs/s", **params)
    context.figures.add("locks_overlaps", task_overlaps, "jobs", **params, clock="the task's time.time()")
    context.figures.add("locks_out_of_order", out_of_order, "jobs", **params)
    context.figures.add("locks_db_overlaps", db_overlaps, "jobs", **params, clock="started_at/finished_at (now())")
    context.figures.add("locks_db_overlap_max_ms", round(float(db_overlap_ms), 3), "ms", **params)


def defer_locked_jobs(dsn: str, jobs: int) -> None:
    """jobs / 10 jobs on each lock, one defer_many per lock: every line is full from the start."""
    app = make_app(dsn)
    record_run = app.get_task("record_run")
    for number in range(LOCKS):
        lock = f"lock-{number}"
        record_run.configure(lock=lock).defer_many([[lock] for _ in range(jobs // LOCKS)])
    app.store.close()


def count_task_overlaps(path: str) -> int:
    """Per lock, runs that started before the previous run (in start order) ended."""
    runs: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    with open(path) as lines:
        for line in lines:
            lock, started, ended = line.split()
            runs[lock].append((float(started), float(ended)))
    overlaps = 0
    for line_runs in runs.values():
        line_runs.sort()
        overlaps += sum(1 for previous, run in itertools.pairwise(line_runs) if run[0] < previous[1])
    return overlaps
