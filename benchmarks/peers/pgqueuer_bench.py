"""pgqueuer's side of the benchmarks (throughput, defer, latency, io_bound), run with the peers' virtualenv.

    benchmarks/.peers-venv/bin/python benchmarks/peers/pgqueuer_bench.py WORKLOAD --dsn DSN

Prints one JSON line per figure (see protocol.py). The database must be fresh: the script
installs pgqueuer's schema (`Queries.install`, what `pgq install` runs). Throughput is
pgqueuer's best configuration in the reference table: 2 processes, batches of 10, measured on
the database clock from the first pick to the last completion (pgqueuer_log).

io_bound: ``--processes`` worker processes, batches of 10, each capped at ``--concurrency`` jobs
at once (``max_concurrent_tasks``; unlimited by default, when one worker would pick the whole
backlog). pgqueuer 1.6 refuses a ``def`` entrypoint and tells its users to wrap blocking code
in ``asyncio.to_thread``, which the sync variant does, in a default executor sized to the
concurrency (protocol.size_default_executor).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
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
    application_name = fields.get("application_name")
    return await asyncpg.connect(
        host=fields.get("host"),
        port=int(fields.get("port") or 5432),
        user=fields.get("user"),
        password=fields.get("password"),
        database=fields.get("dbname"),
        server_settings={"application_name": application_name} if application_name else None,
    )


async def enqueue(queries: Queries, entrypoint: str, count: int) -> None:
    for start in range(0, count, ENQUEUE_CHUNK):
        size = min(ENQUEUE_CHUNK, count - start)
        await queries.enqueue([entrypoint] * size, [None] * size, [0] * size)


async def drain(options, entrypoint: str, processes: int, worker_options: list[str]) -> tuple[int, float]:
    """Queues ``options.jobs`` jobs, drains them with ``processes`` workers; the jobs done and the
    seconds from the first pick to the last completion."""
    connection = await connect(protocol.as_harness(options.dsn))
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    await enqueue(queries, entrypoint, options.jobs)
    protocol.say(f"{options.jobs} jobs queued; draining with {processes} processes, batches of {BATCH_SIZE}")
    workers = [spawn_worker(options.dsn, "drain", *worker_options) for _ in range(processes)]
    for worker in workers:
        worker.wait()
    first_pick, last_success, done = await connection.fetchrow(
        "SELECT min(created) FILTER (WHERE status = 'picked'),"
        "       max(created) FILTER (WHERE status = 'successful'),"
        "       count(*) FILTER (WHERE status = 'successful')"
        "  FROM pgqueuer_log"
    )
    await connection.close()
    return done, (last_success - first_pick).total_seconds()


async def throughput(options) -> None:
    done, seconds = await drain(options, "noop", PROCESSES, [])
    protocol.emit(
        f"throughput_{PEER}", round(done / seconds, 1), "jobs/s",
        peer=PEER, version=VERSION, jobs=options.jobs, processes=PROCESSES, batch_size=BATCH_SIZE,
        clock="database: first pick to last completion (pgqueuer_log)",
    )


async def io_bound(options) -> None:
    worker_options = ["--variant", options.variant, "--concurrency", str(options.concurrency)]
    done, seconds = await drain(options, f"wait_io_{options.variant}", options.processes, worker_options)
    protocol.emit_io_bound(PEER, done, seconds, peer=PEER, version=VERSION, jobs=options.jobs,
                           variant=options.variant, processes=options.processes, batch_size=BATCH_SIZE,
                           max_concurrent_tasks=options.concurrency,
                           clock="database: first pick to last completion (pgqueuer_log)")


async def defer(options) -> None:
    connection = await connect(options.dsn)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    await protocol.measure_defers(
        PEER, lambda: queries.enqueue("noop", None),
        lambda size: queries.enqueue(["noop"] * size, [None] * size, [0] * size),
        single=options.single, bulk=options.bulk, peer=PEER, version=VERSION,
        single_api="Queries.enqueue(entrypoint, payload)", bulk_api="Queries.enqueue(lists)",
    )
    await connection.close()


async def latency(options) -> None:
    connection = await connect(options.dsn)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "starts")
        worker = spawn_worker(options.dsn, "continuous", latency_file=path)
        try:
            await protocol.measure_latency(PEER, lambda number: queries.enqueue("record_start", str(number).encode()),
                                           path, samples=options.samples, peer=PEER, version=VERSION)
        finally:
            protocol.stop_worker(worker, signal.SIGINT)
    await connection.close()


def spawn_worker(dsn: str, mode: str, *options: str, latency_file: str | None = None) -> subprocess.Popen:
    environment = {protocol.LATENCY_FILE_VARIABLE: latency_file} if latency_file is not None else {}
    return protocol.spawn_worker(__file__, dsn, "--mode", mode, *options, environment=environment)


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

    @queue.entrypoint("wait_io_async")
    async def wait_io_async(job: Job) -> None:
        await protocol.wait_io_async()

    @queue.entrypoint("wait_io_sync")
    async def wait_io_sync(job: Job) -> None:
        await asyncio.to_thread(protocol.wait_io)

    mode = QueueExecutionMode(options.mode)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, queue.shutdown.set)
    # io_bound passes --concurrency; the other workloads leave pgqueuer's default (no cap).
    max_concurrent_tasks = options.concurrency if options.concurrency > 1 else None
    if options.variant == "sync":
        protocol.size_default_executor(options.concurrency)
    await queue.qm.run(batch_size=BATCH_SIZE, mode=mode, dequeue_timeout=timedelta(seconds=5),
                       max_concurrent_tasks=max_concurrent_tasks)
    await connection.close()


def main() -> None:
    parser = protocol.parser(__doc__.splitlines()[0])
    parser.add_argument("--mode", default="drain", choices=["drain", "continuous"])
    options = parser.parse_args()
    workload = {"throughput": throughput, "defer": defer, "latency": latency, "io_bound": io_bound,
                "worker": work}[options.workload]
    asyncio.run(workload(options))


if __name__ == "__main__":
    main()
