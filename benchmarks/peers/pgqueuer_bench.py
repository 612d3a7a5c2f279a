"""pgqueuer's side of the benchmarks (throughput, defer, latency), run with the peers' virtualenv.

    benchmarks/.peers-venv/bin/python benchmarks/peers/pgqueuer_bench.py WORKLOAD --dsn DSN

Prints one JSON line per figure (see protocol.py). The database must be fresh: the script
installs pgqueuer's schema (`Queries.install`, what `pgq install` runs). Throughput is
pgqueuer's best configuration in the reference table: 2 processes, batches of 10, measured on
the database clock from the first pick to the last completion (pgqueuer_log).
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import asyncpg
import pgqueuer
import protocol
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode
from psycopg.conninfo import conninfo_to_dict

PEER = "pgqueuer"
VERSION = pgqueuer.__version__
PROCESSES = 2
BATCH_SIZE = 10
ENQUEUE_CHUNK = 10_000


async def connect(dsn: str) -> asyncpg.Connection:
    # asyncpg reads URIs only; libpq keyword strings (a private cluster's socket) become keywords.
    fields = conninfo_to_dict(dsn)
    return await asyncpg.connect(
        host=fields.get("host"),
        port=int(fields.get("port") or 5432),
        user=fields.get("user"),
        password=fields.get("password"),
        database=fields.get("dbname"),
    )


async def enqueue(queries: Queries, entrypoint: str, count: int) -> None:
    for start in range(0, count, ENQUEUE_CHUNK):
        size = min(ENQUEUE_CHUNK, count - start)
        await queries.enqueue([entrypoint] * size, [None] * size, [0] * size)


async def throughput(options) -> None:
    connection = await connect(options.dsn)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    await enqueue(queries, "noop", options.jobs)
    protocol.say(f"{options.jobs} jobs queued; draining with {PROCESSES} processes, batches of {BATCH_SIZE}")
    workers = [spawn_worker(options.dsn, "drain") for _ in range(PROCESSES)]
    for worker in workers:
        worker.wait()
    first_pick, last_success, done = await connection.fetchrow(
        "SELECT min(created) FILTER (WHERE status = 'picked'),"
        "       max(created) FILTER (WHERE status = 'successful'),"
        "       count(*) FILTER (WHERE status = 'successful')"
        "  FROM pgqueuer_log"
    )
    await connection.close()
    seconds = (last_success - first_pick).total_seconds()
    protocol.emit(
        f"throughput_{PEER}", round(done / seconds, 1), "jobs/s",
        peer=PEER, version=VERSION, jobs=options.jobs, processes=PROCESSES, batch_size=BATCH_SIZE,
        clock="database: first pick to last completion (pgqueuer_log)",
    )


async def defer(options) -> None:
    connection = await connect(options.dsn)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    started = time.perf_counter()
    for _ in range(options.single):
        await queries.enqueue("noop", None)
    seconds = time.perf_counter() - started
    protocol.emit(f"defer_single_{PEER}", round(options.single / seconds, 1), "jobs/s",
                  peer=PEER, version=VERSION, calls=options.single, api="Queries.enqueue(entrypoint, payload)")
    size = options.bulk
    started = time.perf_counter()
    await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    seconds = time.perf_counter() - started
    protocol.emit(f"defer_bulk_{PEER}", round(size / seconds, 1), "jobs/s",
                  peer=PEER, version=VERSION, jobs=size, calls=1, api="Queries.enqueue(lists)")
    await connection.close()


async def latency(options) -> None:
    connection = await connect(options.dsn)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "starts")
        worker = spawn_worker(options.dsn, "continuous", latency_file=path)
        try:
            await defer_one_at_a_time(queries, path, warmup=20, samples=options.samples)
        finally:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    await connection.close()


async def defer_one_at_a_time(queries: Queries, path: str, *, warmup: int, samples: int) -> None:
    # The warm-up jobs also prove that the worker listens before the samples start.
    for number in range(-warmup, 0):
        await queries.enqueue("record_start", str(number).encode())
    protocol.wait_for_starts(path, set(range(-warmup, 0)), timeout_s=60)
    deferred_at: dict[int, float] = {}
    for number in range(samples):
        await asyncio.sleep(random.uniform(0.010, 0.020))
        deferred_at[number] = time.time()
        await queries.enqueue("record_start", str(number).encode())
    started_at = protocol.wait_for_starts(path, set(deferred_at), timeout_s=30)
    protocol.emit_latency(PEER, deferred_at, started_at, peer=PEER, version=VERSION, gap_ms="10-20")


def spawn_worker(dsn: str, mode: str, latency_file: str | None = None) -> subprocess.Popen:
    environment = dict(os.environ)
    if latency_file is not None:
        environment[protocol.LATENCY_FILE_VARIABLE] = latency_file
    return subprocess.Popen([sys.executable, __file__, "worker", "--dsn", dsn, "--mode", mode], env=environment)


async def work(options) -> None:
    """One worker process: runs pgqueuer's QueueManager until drained (or until SIGINT)."""
    connection = await connect(options.dsn)
    queue = PgQueuer(AsyncpgDriver(connection))

    @queue.entrypoint("noop")
    async def noop(job: Job) -> None:
        pass

    @queue.entrypoint("record_start")
    async def record_start(job: Job) -> None:
        protocol.record_start(int(job.payload))

    mode = QueueExecutionMode(options.mode)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, queue.shutdown.set)
    await queue.qm.run(batch_size=BATCH_SIZE, mode=mode, dequeue_timeout=timedelta(seconds=5))
    await connection.close()


def main() -> None:
    parser = protocol.parser(__doc__.splitlines()[0])
    parser.add_argument("--mode", default="drain", choices=["drain", "continuous"])
    options = parser.parse_args()
    workload = {"throughput": throughput, "defer": defer, "latency": latency, "worker": work}[options.workload]
    asyncio.run(workload(options))


if __name__ == "__main__":
    main()
