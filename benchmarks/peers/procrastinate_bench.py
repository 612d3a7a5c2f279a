"""procrastinate's side of the benchmarks (throughput, defer, latency), run with the peers' virtualenv.

    benchmarks/.peers-venv/bin/python benchmarks/peers/procrastinate_bench.py WORKLOAD --dsn DSN

Prints one JSON line per figure (see protocol.py). The database must be fresh: the script
applies procrastinate's schema (`schema_manager.apply_schema_async`, what `procrastinate schema
--apply` runs). Throughput is procrastinate's best configuration in the reference table: one
worker process with concurrency 10 (async tasks), measured on the database clock from the first
`started` event to the last `succeeded` one (procrastinate_events).
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

import procrastinate
import protocol

PEER = "procrastinate"
VERSION = version("procrastinate")
CONCURRENCY = 10
BATCH_CHUNK = 10_000



async def noop() -> None:
    pass


async def record_start(number: int) -> None:
    protocol.record_start(number)


async def open_app(dsn: str, *, apply_schema: bool) -> None:
    """Builds the app on ``dsn`` (the connector is fixed at construction) and opens it."""
    global app, noop_task, record_start_task
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    noop_task = app.task(name="noop")(noop)
    record_start_task = app.task(name="record_start")(record_start)
    await app.open_async()
    if apply_schema:
        await app.schema_manager.apply_schema_async()


async def throughput(options) -> None:
    await open_app(options.dsn, apply_schema=True)
    for start in range(0, options.jobs, BATCH_CHUNK):
        await noop_task.batch_defer_async(*[{}] * min(BATCH_CHUNK, options.jobs - start))
    protocol.say(f"{options.jobs} jobs queued; draining with one worker, concurrency {CONCURRENCY}")
    # wait=False: the worker returns once it has caught up with the queue.
    await app.run_worker_async(concurrency=CONCURRENCY, wait=False, install_signal_handlers=False)
    async with app.connector.pool.connection() as connection, connection.cursor() as cursor:
        await cursor.execute(
            "SELECT min(at) FILTER (WHERE type = 'started'),"
            "       max(at) FILTER (WHERE type = 'succeeded'),"
            "       count(*) FILTER (WHERE type = 'succeeded')"
            "  FROM procrastinate_events"
        )
        first_start, last_success, done = await cursor.fetchone()
    await app.close_async()
    seconds = (last_success - first_start).total_seconds()
    protocol.emit(
        f"throughput_{PEER}", round(done / seconds, 1), "jobs/s",
        peer=PEER, version=VERSION, jobs=options.jobs, processes=1, concurrency=CONCURRENCY,
        clock="database: first started event to last succeeded event",
    )


async def defer(options) -> None:
    await open_app(options.dsn, apply_schema=True)
    started = time.perf_counter()
    for _ in range(options.single):
        await noop_task.defer_async()
    seconds = time.perf_counter() - started
    protocol.emit(f"defer_single_{PEER}", round(options.single / seconds, 1), "jobs/s",
                  peer=PEER, version=VERSION, calls=options.single, api="task.defer_async()")
    size = options.bulk
    started = time.perf_counter()
    await noop_task.batch_defer_async(*[{}] * size)
    seconds = time.perf_counter() - started
    protocol.emit(f"defer_bulk_{PEER}", round(size / seconds, 1), "jobs/s",
                  peer=PEER, version=VERSION, jobs=size, calls=1, api="task.batch_defer_async(*kwargs)")
    await app.close_async()


async def latency(options) -> None:
    await open_app(options.dsn, apply_schema=True)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "starts")
        worker = spawn_worker(options.dsn, path)
        try:
            await defer_one_at_a_time(path, warmup=20, samples=options.samples)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    await app.close_async()


async def defer_one_at_a_time(path: str, *, warmup: int, samples: int) -> None:
    # The warm-up jobs also prove that the worker listens before the samples start.
    for number in range(-warmup, 0):
        await record_start_task.defer_async(number=number)
    protocol.wait_for_starts(path, set(range(-warmup, 0)), timeout_s=60)
    deferred_at: dict[int, float] = {}
    for number in range(samples):
        await asyncio.sleep(random.uniform(0.010, 0.020))
        deferred_at[number] = time.time()
        await record_start_task.defer_async(number=number)
    started_at = protocol.wait_for_starts(path, set(deferred_at), timeout_s=30)
    protocol.emit_latency(PEER, deferred_at, started_at, peer=PEER, version=VERSION, gap_ms="10-20",
                          concurrency=1)


def spawn_worker(dsn: str, latency_file: str) -> subprocess.Popen:
    environment = {**os.environ, protocol.LATENCY_FILE_VARIABLE: latency_file}
    return subprocess.Popen([sys.executable, __file__, "worker", "--dsn", dsn], env=environment)


async def work(options) -> None:
    """The latency workload's worker process: one worker, until SIGTERM."""
    await open_app(options.dsn, apply_schema=False)
    await app.run_worker_async(concurrency=1, wait=True)
    await app.close_async()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    # The app is built in this script on purpose (one file per peer); the warning says nothing here.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    options = protocol.parser(__doc__.splitlines()[0]).parse_args()
    workload = {"throughput": throughput, "defer": defer, "latency": latency, "worker": work}[options.workload]
    asyncio.run(workload(options))


if __name__ == "__main__":
    main()
