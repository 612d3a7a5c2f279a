"""Claim under backlog: does a claim cost the same with a big table behind it (invariant 6)?

The store's own ``claim_jobs`` + ``finish_job`` in a loop, one job at a time, first on a table
holding only the free jobs, then with 100,000 jobs waiting behind 1,000 busy locks and 1,000,000
finished jobs ahead of them (after ANALYZE). Figures: claims per second both ways and their
ratio, the median time of the claim statement alone, and the buffers one claim reads.

Each phase starts right after a CHECKPOINT (if the role may run one). The backlog is written with the triggers off (session_replication_role = replica), directly
in the state the triggers would leave it in (finished rows not heads, each busy lock's doing
job its head, the waiting jobs behind it): 1.1 million rows in seconds rather than minutes.
"""
from __future__ import annotations

import os
import statistics
import time

import psycopg2

from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.servers import cursor_on
from cabbage.jobs import Outcome
from cabbage.postgres import PostgresJobStore
from cabbage.sql import queries

BUILD_BACKLOG = """
SET session_replication_role = replica;
INSERT INTO cabbage_jobs (task_name, status, is_head, attempts, created_at, scheduled_at, started_at, finished_at)
SELECT 'noop', 'succeeded', false, 1, t, t, t, t
  FROM (SELECT now() - interval '2 hours' AS t) AS clock, generate_series(1, %(finished)s);
INSERT INTO cabbage_jobs (task_name, lock, status, is_head, attempts, worker_id, created_at, scheduled_at, started_at)
SELECT 'noop', 'busy-' || n, 'doing', true, 1, %(busy_worker_id)s, t, t, now()
  FROM (SELECT now() - interval '1 hour' AS t) AS clock, generate_series(1, %(locks)s) AS n;
INSERT INTO cabbage_jobs (task_name, lock, status, is_head, created_at, scheduled_at)
SELECT 'noop', 'busy-' || (n %% %(locks)s + 1), 'todo', false, t, t
  FROM (SELECT now() - interval '1 hour' AS t) AS clock, generate_series(1, %(waiting)s) AS n;
RESET session_replication_role;
"""


def run(context: RunContext) -> None:
    free = context.scale(5_000, 1_000)
    locks, waiting, finished = context.scale((1_000, 100_000, 1_000_000), (100, 10_000, 100_000))
    backlog = f"{waiting} waiting behind {locks} busy locks + {finished} finished"
    with context.server.fresh_database("claim") as dsn:
        store = PostgresJobStore(dsn)
        worker_id = store.register_worker("benchmarks", os.getpid(), None)
        busy_worker_id = store.register_worker("benchmarks-busy", os.getpid(), None)

        context.say(f"claim: {free} claims on an empty table")
        defer_free_jobs(dsn, free)
        checkpoint(context, dsn)
        empty_rate, empty_claim_ms = claim_loop(store, worker_id, free)
        empty_buffers = claim_buffers(dsn, worker_id)

        context.say(f"claim: building the backlog ({backlog})")
        with cursor_on(dsn) as cursor:
            cursor.execute(BUILD_BACKLOG, {"finished": finished, "locks": locks, "waiting": waiting,
                                           "busy_worker_id": busy_worker_id})
        defer_free_jobs(dsn, free)
        checkpoint(context, dsn)
        context.say(f"claim: {free} claims behind the backlog")
        backlog_rate, backlog_claim_ms = claim_loop(store, worker_id, free)
        buffers = claim_buffers(dsn, worker_id)
        store.close()

    params = {"claims": free, "loop": "claim_jobs + finish_job, one job at a time"}
    context.figures.add("claim_rate", empty_rate, "claims/s", **params, backlog="none")
    context.figures.add("claim_rate", backlog_rate, "claims/s", **params, backlog=backlog)
    context.figures.add("claim_backlog_ratio", round(backlog_rate / empty_rate, 3), "ratio", **params, backlog=backlog)
    context.figures.add("claim_ms_p50", empty_claim_ms, "ms", claims=free, backlog="none")
    context.figures.add("claim_ms_p50", backlog_claim_ms, "ms", claims=free, backlog=backlog)
    context.figures.add("claim_buffers", empty_buffers, "buffers", claims=free, backlog="none")
    context.figures.add("claim_buffers", buffers, "buffers", claims=free, backlog=backlog)


def checkpoint(context: RunContext, dsn: str) -> None:
    """Both phases start right after a checkpoint, so that neither pays alone for the full-page
    writes that follow one (1.1 million rows of backlog fill the WAL and trigger a checkpoint)."""
    try:
        with cursor_on(dsn) as cursor:
            cursor.execute("CHECKPOINT")
    except psycopg2.Error as exc:
        context.say(f"claim: no CHECKPOINT ({exc.pgerror or exc}); the phases may differ in WAL cost")


def defer_free_jobs(dsn: str, count: int) -> None:
    app = make_app(dsn)
    app.get_task("noop").defer_many([[] for _ in range(count)])
    app.store.close()
    with cursor_on(dsn) as cursor:
        cursor.execute("ANALYZE cabbage_jobs")


def claim_loop(store: PostgresJobStore, worker_id: int, count: int) -> tuple[float, float]:
    """Claims and finishes ``count`` jobs; claims per second, and the claim's median in ms."""
    claim_s = []
    started = time.perf_counter()
    for _ in range(count):
        before = time.perf_counter()
        (job,) = store.claim_jobs(worker_id, None, limit=1)
        claim_s.append(time.perf_counter() - before)
        store.finish_job(job.id, worker_id, job.attempts, Outcome.succeeded())
    rate = count / (time.perf_counter() - started)
    return round(rate, 1), round(statistics.median(claim_s) * 1000, 3)


def claim_buffers(dsn: str, worker_id: int) -> int:
    """Shared buffers one claim touches behind the backlog (EXPLAIN ANALYZE, rolled back)."""
    with cursor_on(dsn) as cursor:
        cursor.execute(queries["prepare_worker_statements"])  # as a worker's session does
        cursor.execute("BEGIN")
        statement = cursor.mogrify(queries["claim_jobs"], {"worker_id": worker_id, "queues": None, "limit": 1, "start_all": False})
        # A session's first call compiles the claim function and plans its statements, reading
        # the catalog: warm it, as every worker's session is after its first claim.
        cursor.execute(statement)
        cursor.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement)
        (plan,) = cursor.fetchone()[0]
        cursor.execute("ROLLBACK")
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))
