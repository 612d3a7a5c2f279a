"""The limit: pgbench doing the minimal SQL of the same work, the ceiling to report cabbage against.

Scripts in benchmarks/pgbench/ on a minimal job table (schema.sql): drain.sql claims the oldest
free job with SKIP LOCKED and finishes it (two commits per job), drain_one_commit.sql finishes the
job it claimed last and claims the next in one statement (one commit per job: a cabbage worker's
finish-and-claim one job at a time), lifecycle.sql inserts, claims
and finishes (three), defer.sql inserts one row (one). Each runs with prepared statements at
the client counts of the throughput workload, in a fresh database each time.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from benchmarks.context import RunContext
from benchmarks.servers import cursor_on

SCRIPTS = Path(__file__).resolve().parent.parent / "pgbench"
PGBENCH_CANDIDATES = ("/usr/lib/postgresql/15/bin/pgbench",)
TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def run(context: RunContext) -> None:
    pgbench = find_pgbench()
    if pgbench is None:
        context.say("limit: pgbench not found (PATH, /usr/lib/postgresql/15/bin); skipped")
        return
    drain_jobs = context.scale(20_000, 4_000)
    for clients in context.scale([1, 2, 4, 8, 16], [1, 2, 8]):
        rate = measure(context, pgbench, "drain", clients, drain_jobs, prefill=drain_jobs)
        context.figures.add("limit_drain", rate, "jobs/s", clients=clients, jobs=drain_jobs,
                            sql="claim (SKIP LOCKED) + finish, 2 commits per job")
    for clients in context.scale([1, 2], [2]):
        rate = measure(context, pgbench, "drain_one_commit", clients, drain_jobs, prefill=drain_jobs)
        context.figures.add("limit_drain_one_commit", rate, "jobs/s", clients=clients, jobs=drain_jobs,
                            sql="finish the last job + claim the next (SKIP LOCKED), 1 commit per job")
    lifecycle_jobs = context.scale(10_000, 2_000)
    for clients in context.scale([1, 2, 8], [2]):
        rate = measure(context, pgbench, "lifecycle", clients, lifecycle_jobs, prefill=0)
        context.figures.add("limit_lifecycle", rate, "jobs/s", clients=clients, jobs=lifecycle_jobs,
                            sql="insert + claim (SKIP LOCKED) + finish, 3 commits per job")
    defers = context.scale(5_000, 1_000)
    rate = measure(context, pgbench, "defer", 1, defers, prefill=0)
    context.figures.add("limit_defer", rate, "jobs/s", clients=1, jobs=defers, sql="one-row INSERT, 1 commit")


def find_pgbench() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    return next((path for path in PGBENCH_CANDIDATES if Path(path).exists()), None)


def measure(context: RunContext, pgbench: str, script: str, clients: int, jobs: int, *, prefill: int) -> float:
    """Runs ``jobs`` transactions of a script over ``clients`` clients; transactions (jobs) per second."""
    per_client = max(1, jobs // clients)
    with context.server.fresh_database(f"limit_{script}", cabbage_schema=False) as dsn:
        context.say(f"limit: pgbench {script}.sql, {clients} clients, {per_client * clients} jobs")
        with cursor_on(dsn) as cursor:
            cursor.execute((SCRIPTS / "schema.sql").read_text())
            if prefill:
                cursor.execute("INSERT INTO bench_jobs (args) SELECT '[]' FROM generate_series(1, %s)", (prefill,))
                cursor.execute("VACUUM ANALYZE bench_jobs")
        command = [pgbench, "--no-vacuum", "--protocol=prepared", f"--client={clients}",
                   f"--jobs={min(clients, 2)}", f"--transactions={per_client}", "--define=job_id=0",
                   f"--file={SCRIPTS / (script + '.sql')}", dsn]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        with cursor_on(dsn) as cursor:
            cursor.execute("SELECT count(*) FROM bench_jobs WHERE status = 'succeeded'")
            (finished,) = cursor.fetchone()
    output = result.stdout + result.stderr
    tps, failed = TPS.search(output), FAILED.search(output)
    if result.returncode != 0 or tps is None or (failed and int(failed.group(1))):
        context.say(f"limit: pgbench {script}.sql with {clients} clients failed:\n{output[-2000:]}")
        return 0.0
    # tps counts script runs; a claim can come back empty under contention, so count what finished.
    transactions = per_client * clients
    done = transactions if script == "defer" else finished
    return round(float(tps.group(1)) * done / transactions, 1)
