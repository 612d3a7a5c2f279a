"""procrastinate's side of the benchmarks (throughput, defer, latency, io_bound), run with the peers' virtualenv.

    benchmarks/.peers-venv/bin/python benchmarks/peers/procrastinate_bench.py WORKLOAD --dsn DSN

Prints one JSON line per figure (see protocol.py). The database must be fresh: the script
applies procrastinate's schema (`schema_manager.apply_schema_async`, what `procrastinate schema
--apply` runs). Throughput is procrastinate's best configuration in the reference table: one
worker process with concurrency 10 (async tasks), measured on the database clock from the first
`started` event to the last `succeeded` one (procrastinate_events).

io_bound: ``--processes`` worker processes of ``--concurrency`` sub-workers each, the default
pool, ``wait=False`` (a worker ends once it has caught up with the queue). A ``def`` task runs in
a thread (asgiref's sync_to_async, in the loop's default executor), which each worker sizes to
its concurrency (protocol.size_default_executor); procrastinate's docs warn against concurrency
with blocking tasks because of the GIL, but a sleeping thread holds no GIL.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
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
    global app, noop_task, record_start_task, io_tasks
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    noop_task = app.task(name="noop")(noop)
    record_start_task = app.task(name="record_start")(record_start)
    io_tasks = {"sync": app.task(name="wait_io")(protocol.wait_io),
                "async": app.task(name="wait_io_async")(protocol.wait_io_async)}
    await app.open_async()
    if apply_schema:
        await app.schema_manager.apply_schema_async()


async def defer_jobs(task, count: int) -> None:
    for start in range(0, count, BATCH_CHUNK):
        await task.batch_defer_async(*[{}] * min(BATCH_CHUNK, count - start))


async def drain_rate() -> tuple[int, float]:
    """Jobs succeeded, and seconds from the first started event to the last succeeded one."""
    async with app.connector.pool.connection() as connection, connection.cursor() as cursor:
        await cursor.execute(
            "SELECT count(*) FILTER (WHERE type = 'succeeded'),"
            "       extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
            "                        - min(at) FILTER (WHERE type = 'started'))::float"
            "  FROM procrastinate_events"
        )
        return await cursor.fetchone()


async def throughput(options) -> None:
    await open_app(options.dsn, apply_schema=True)
    await defer_jobs(noop_task, options.jobs)
    protocol.say(f"{options.jobs} jobs queued; draining with one worker, concurrency {CONCURRENCY}")
    # wait=False: the worker returns once it has caught up with the queue.
    await app.run_worker_async(concurrency=CONCURRENCY, wait=False, install_signal_handlers=False)
    done, seconds = await drain_rate()
    await app.close_async()
    protocol.emit(
        f"throughput_{PEER}", round(done / seconds, 1), "jobs/s",
        peer=PEER, version=VERSION, jobs=options.jobs, processes=1, concurrency=CONCURRENCY,
        clock="database: first started event to last succeeded event",
    )


async def defer(options) -> None:
    await open_app(options.dsn, apply_schema=True)
    await protocol.measure_defers(
        PEER, noop_task.defer_async, lambda size: noop_task.batch_defer_async(*[{}] * size),
        single=options.single, bulk=options.bulk, peer=PEER, version=VERSION,
        single_api="task.defer_async()", bulk_api="task.batch_defer_async(*kwargs)",
    )
    await app.close_async()


async def io_bound(options) -> None:
    await open_app(protocol.as_harness(options.dsn), apply_schema=True)
    await defer_jobs(io_tasks[options.variant], options.jobs)
    protocol.say(f"{options.jobs} jobs queued; {options.processes} worker(s) of concurrency {options.concurrency}")
    worker_options = ["--concurrency", str(options.concurrency), "--variant", options.variant, "--until-empty"]
    workers = [protocol.spawn_worker(__file__, options.dsn, *worker_options) for _ in range(options.processes)]
    for worker in workers:
        worker.wait()
    done, seconds = await drain_rate()
    await app.close_async()
    protocol.emit_io_bound(PEER, done, seconds, peer=PEER, version=VERSION, jobs=options.jobs,
                           variant=options.variant, processes=options.processes, concurrency=options.concurrency,
                           clock="database: first started event to last succeeded event")


async def latency(options) -> None:
    await open_app(options.dsn, apply_schema=True)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "starts")
        worker = protocol.spawn_worker(__file__, options.dsn, environment={protocol.LATENCY_FILE_VARIABLE: path})
        try:
            await protocol.measure_latency(
                PEER, lambda number: record_start_task.defer_async(number=number), path,
                samples=options.samples, peer=PEER, version=VERSION, concurrency=1,
            )
        finally:
            protocol.stop_worker(worker, signal.SIGTERM)
    await app.close_async()


async def work(options) -> None:
    """A worker process of --concurrency sub-workers: until SIGTERM, or with --until-empty until
    it has caught up with the queue."""
    await open_app(options.dsn, apply_schema=False)
    if options.variant == "sync":
        protocol.size_default_executor(options.concurrency)
    await app.run_worker_async(concurrency=options.concurrency, wait=not options.until_empty,
                               install_signal_handlers=not options.until_empty)
    await app.close_async()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    # The app is built in this script on purpose (one file per peer); the warning says nothing here.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    parser = protocol.parser(__doc__.splitlines()[0])
    parser.add_argument("--until-empty", action="store_true", help="worker: stop once the queue is empty")
    options = parser.parse_args()
    workload = {"throughput": throughput, "defer": defer, "latency": latency, "io_bound": io_bound,
                "worker": work}[options.workload]
    asyncio.run(workload(options))


if __name__ == "__main__":
    main()
