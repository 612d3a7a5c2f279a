"""oban's side of the benchmarks (throughput, defer, latency, io_bound), run with the 3.12 peers' virtualenv.

    benchmarks/.peers-venv-3.12/bin/python benchmarks/peers/oban_bench.py WORKLOAD --dsn DSN

Prints one JSON line per figure (see protocol.py). The database must be fresh: the script
installs oban's schema (``oban.schema.install``, what ``oban install`` runs). Workers run as
``oban start`` runs them, the way oban's docs/production.md recommends: on uvloop, with orjson
for JSON, one ``Oban(pool=..., queues={"default": LIMIT})`` per process, oban's default pool
(1 to 10 connections) and its default plugins. oban 0.7 runs async jobs only: a ``def`` job is
called on the event loop itself (``@job`` wraps it in an ``async def process``), so a
``time.sleep`` would stop every other job; the io_bound workload runs its async variant only.

Throughput is measured on the database clock, from the first ``attempted_at`` to the last
``completed_at`` of oban_jobs, with THROUGHPUT_PROCESSES processes of queue limit
THROUGHPUT_LIMIT: the best of 1 and 2 processes at limits 10, 20, 50, 100 and 200 on the
project's machine (docs/performance.md).
"""
from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from importlib.metadata import version

import orjson
import protocol
import uvloop
from oban import Job, Oban, worker
from oban.schema import install
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

PEER = "oban"
VERSION = version("oban")
QUEUE = "default"
THROUGHPUT_PROCESSES = 2
THROUGHPUT_LIMIT = 100
ENQUEUE_CHUNK = 5_000


# Class workers, not @job functions: in oban 0.7.0 a @job's enqueue(...) goes through the class's
# enqueue, which calls the signature-bound new() with the already-bound arguments as its one
# positional argument (TypeError for a function without parameters, {"number": {"number": 1}}
# for one with).
@worker(queue=QUEUE)
class Noop:
    async def process(self, job: Job) -> None:
        pass


@worker(queue=QUEUE)
class RecordStart:
    async def process(self, job: Job) -> None:
        protocol.record_start(job.args["number"])


@worker(queue=QUEUE)
class WaitIO:
    async def process(self, job: Job) -> None:
        await protocol.wait_io_async()


async def open_client(dsn: str) -> tuple[AsyncConnectionPool, Oban]:
    """This process's own pool, under the harness's name, and a client-only Oban (no queues)."""
    pool = await Oban.create_pool(protocol.as_harness(dsn))
    return pool, Oban(pool=pool)


async def throughput(options) -> None:
    done, seconds = await drain(options, Noop, THROUGHPUT_PROCESSES, THROUGHPUT_LIMIT)
    protocol.emit(
        f"throughput_{PEER}", round(done / seconds, 1), "jobs/s",
        peer=PEER, version=VERSION, jobs=options.jobs, processes=THROUGHPUT_PROCESSES, queue_limit=THROUGHPUT_LIMIT,
        clock="database: first attempted_at to last completed_at (oban_jobs)",
    )


async def io_bound(options) -> None:
    if options.variant != "async":
        raise SystemExit("oban_bench.py: oban runs async jobs only (see the docstring)")
    done, seconds = await drain(options, WaitIO, options.processes, options.concurrency)
    protocol.emit_io_bound(PEER, done, seconds, peer=PEER, version=VERSION, jobs=options.jobs,
                           variant=options.variant, processes=options.processes, queue_limit=options.concurrency)


async def drain(options, worker_class: type, processes: int, limit: int) -> tuple[int, float]:
    """Defers ``options.jobs`` jobs, drains them with ``processes`` workers of queue limit ``limit``;
    the jobs completed and the seconds from the first attempt to the last completion."""
    pool, oban = await open_client(options.dsn)
    await install(pool)
    for start in range(0, options.jobs, ENQUEUE_CHUNK):
        await oban.enqueue_many(worker_class.new() for _ in range(min(ENQUEUE_CHUNK, options.jobs - start)))
    protocol.say(f"{options.jobs} jobs queued; draining with {processes} process(es), queue limit {limit}")

    async def count_completed() -> int:
        async with pool.connection() as connection:
            cursor = await connection.execute("SELECT count(*) FROM oban_jobs WHERE state = 'completed'")
            return (await cursor.fetchone())[0]

    await protocol.run_workers_until_finished(__file__, options.dsn, processes, ["--concurrency", str(limit)],
                                              count_completed, options.jobs)
    async with pool.connection() as connection:
        cursor = await connection.execute(
            "SELECT count(*), extract(epoch FROM max(completed_at) - min(attempted_at))::float"
            "  FROM oban_jobs WHERE state = 'completed'"
        )
        done, seconds = await cursor.fetchone()
    await pool.close()
    return done, seconds


async def defer(options) -> None:
    pool, oban = await open_client(options.dsn)
    await install(pool)
    await protocol.measure_defers(
        PEER, Noop.enqueue, lambda size: oban.enqueue_many(Noop.new() for _ in range(size)),
        single=options.single, bulk=options.bulk, peer=PEER, version=VERSION,
        single_api="Worker.enqueue()", bulk_api="Oban.enqueue_many(jobs)",
    )
    await pool.close()


async def latency(options) -> None:
    pool, _ = await open_client(options.dsn)
    await install(pool)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "starts")
        worker = protocol.spawn_worker(__file__, options.dsn, "--concurrency", "1",
                                       environment={protocol.LATENCY_FILE_VARIABLE: path})
        try:
            await protocol.measure_latency(PEER, lambda number: RecordStart.enqueue({"number": number}), path, samples=options.samples,
                                           peer=PEER, version=VERSION, queue_limit=1)
        finally:
            protocol.stop_worker(worker)
    await pool.close()


async def work(options) -> None:
    """One worker process: oban with one queue of limit --concurrency, until SIGTERM."""
    pool = await Oban.create_pool(options.dsn)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    async with Oban(pool=pool, queues={QUEUE: options.concurrency}):
        await stopping.wait()
    await pool.close()


def main() -> None:
    options = protocol.parser(__doc__.splitlines()[0]).parse_args()
    # As `oban start` does: orjson for the jobs' JSON, uvloop for the event loop.
    set_json_dumps(orjson.dumps)
    set_json_loads(orjson.loads)
    workload = {"throughput": throughput, "defer": defer, "latency": latency, "io_bound": io_bound,
                "worker": work}[options.workload]
    uvloop.run(workload(options))


if __name__ == "__main__":
    main()
