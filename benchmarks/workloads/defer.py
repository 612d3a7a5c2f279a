"""Defer: jobs per second for single ``task.defer()`` calls and for one bulk ``defer_many``.

2,000 single calls (each its own round trip and commit) and one ``defer_many`` of 100,000 jobs.
For scale, the same single-row insert into cabbage_jobs written by hand with psycopg2 (what
the table, its indexes and triggers cost, without cabbage's Python or the notification), the
same loop on a table of one bigserial column (the commit's own cost, the floor of any durable
one-row defer on this machine), and, with --compare, each peer's single and bulk API on the
same counts. cabbage and the peers run in alternating rounds (three; one with --quick), each in a
fresh database: every figure is the median of its rounds', every ratio against a peer the median
of the rounds' ratios (benchmarks/paired.py).
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import closing

import psycopg2

from benchmarks import paired, peer_runs
from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext

RAW_INSERT = "INSERT INTO cabbage_jobs (task_name) VALUES ('noop') RETURNING id"
FLOOR_TABLE = "CREATE TABLE bench_commit_floor (id bigserial PRIMARY KEY)"
FLOOR_INSERT = "INSERT INTO bench_commit_floor DEFAULT VALUES RETURNING id"


def run(context: RunContext) -> None:
    single = context.scale(2_000, 500)
    bulk = context.scale(100_000, 20_000)
    rounds = context.scale(3, 1)
    ours: list[dict[str, float]] = []
    theirs: dict[str, list[paired.PeerRound]] = defaultdict(list)
    for round_number in range(1, rounds + 1):
        context.say(f"defer: round {round_number}/{rounds}, {single} single defer() calls, one defer_many of {bulk}")
        ours.append(measure_cabbage(context, single, bulk))
        for peer in context.peers:
            with context.server.fresh_database(f"defer_{peer}", cabbage_schema=False) as dsn:
                context.say(f"defer: round {round_number}/{rounds}, {peer}")
                records = peer_runs.run(peer, "defer", dsn, timeout_s=300, single=single, bulk=bulk)
            theirs[peer].append(paired.by_name(records))
    params = {
        "defer_single": {"calls": single, "api": "task.defer()"},
        "defer_bulk": {"jobs": bulk, "calls": 1, "api": "task.defer_many(calls)"},
        "defer_single_raw_insert": {"calls": single, "api": "psycopg2 autocommit INSERT into cabbage_jobs"},
        "defer_single_commit_floor": {"calls": single, "api": "psycopg2 autocommit INSERT into a one-column table"},
    }
    paired.add_medians(context, ours, units=dict.fromkeys(params, "jobs/s"), params=params, digits=1)
    for peer, peer_rounds in theirs.items():
        paired.add_peer_medians(context, peer_rounds, digits=1)
        paired.add_peer_ratios(context, peer, ours, peer_rounds, ["defer_single", "defer_bulk"])


def measure_cabbage(context: RunContext, single: int, bulk: int) -> dict[str, float]:
    """One round in a fresh database: cabbage's single and bulk defers, then the bare inserts."""
    with context.server.fresh_database("defer") as dsn:
        app = make_app(dsn)
        noop = app.get_task("noop")
        noop.defer()  # connects, so that the timing holds only defers
        started = time.perf_counter()
        for _ in range(single):
            noop.defer()
        found = {"defer_single": single / (time.perf_counter() - started)}
        calls: list[list[object]] = [[] for _ in range(bulk)]
        started = time.perf_counter()
        noop.defer_many(calls)
        found["defer_bulk"] = bulk / (time.perf_counter() - started)
        app.store.close()
        found["defer_single_raw_insert"] = insert_rate(dsn, RAW_INSERT, single)
        found["defer_single_commit_floor"] = insert_rate(dsn, FLOOR_INSERT, single, FLOOR_TABLE)
    return found


def insert_rate(dsn: str, insert: str, calls: int, create_table: str | None = None) -> float:
    with closing(psycopg2.connect(dsn)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            if create_table is not None:
                cursor.execute(create_table)
            started = time.perf_counter()
            for _ in range(calls):
                cursor.execute(insert)
                cursor.fetchone()
            return round(calls / (time.perf_counter() - started), 1)
