"""chancy's side of the benchmarks (throughput, defer, latency, io_bound), run with the 3.12 peers' virtualenv.

    benchmarks/.peers-venv-3.12/bin/python benchmarks/peers/chancy_bench.py WORKLOAD --dsn DSN

Prints one JSON line per figure (see protocol.py). The database must be fresh: the script runs
chancy's migrations (``Chancy.migrate``, what ``chancy misc migrate`` runs). Each worker process
is one ``chancy.Worker`` with chancy's default plugins and pool (1 to 10 connections), serving
one queue declared for the work at hand, as chancy's executors documentation recommends: the
AsyncExecutor for ``async def`` jobs ("optimized for IO-bound jobs ... thousands of jobs can be
executed concurrently"), the ThreadedExecutor for ``def`` jobs that wait ("suitable for
IO-bound jobs that can't use asyncio"), not the default ProcessExecutor (one process per job,
for CPU-bound work). The queue polls eagerly (``eager_polling``: fetch again as soon as a job
completes) so that a worker keeps its slots full from a backlog; without it a worker fetches
only when notified of a push or every ``polling_interval`` (5 s). chancy logs at warning, as
the other peers do; at its default, info, it logs one line per job.

Throughput: THROUGHPUT_PROCESSES process(es), AsyncExecutor, concurrency THROUGHPUT_CONCURRENCY
(the best of the settings tried on the project's machine, docs/performance.md). A worker writes
its jobs' outcomes in batches, once a second (``Worker.send_outgoing_interval``); until then a
finished job is still ``running`` in the database, and its ``completed_at`` is the worker's clock
when the job ended. So a drain ends when the script's poll (every 50 ms, database clock) first
sees every job ``succeeded``, and starts at the first ``started_at`` (the database's now() at
fetch).
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from importlib.metadata import version

import protocol
from chancy import Chancy, Queue, Worker, job
from chancy.app import setup_default_logger

PEER = "chancy"
VERSION = version("chancy")
QUEUE = "default"
THROUGHPUT_PROCESSES = 2
THROUGHPUT_CONCURRENCY = 100
EXECUTORS = {"async": Chancy.Executor.Async, "sync": Chancy.Executor.Threaded}
CLOCK = "database: first started_at to the poll that saw the last success recorded (every 50 ms)"


@job(queue=QUEUE)
async def noop() -> None:
    pass


@job(queue=QUEUE)
async def record_start(*, number: int) -> None:
    protocol.record_start(number)


@job(queue=QUEUE)
async def wait_io_async() -> None:
    await protocol.wait_io_async()


@job(queue=QUEUE)
def wait_io() -> None:
    protocol.wait_io()


def open_app(dsn: str) -> Chancy:
    return Chancy(dsn, log=setup_default_logger(logging.WARNING))


async def prepare(chancy: Chancy, executor: str, concurrency: int) -> None:
    await chancy.migrate()
    await chancy.declare(Queue(QUEUE, concurrency=concurrency, executor=executor, eager_polling=True), upsert=True)


async def throughput(options) -> None:
    done, seconds = await drain(options, noop, "async", THROUGHPUT_PROCESSES, THROUGHPUT_CONCURRENCY)
    protocol.emit(
        f"throughput_{PEER}", round(done / seconds, 1), "jobs/s",
        peer=PEER, version=VERSION, jobs=options.jobs, processes=THROUGHPUT_PROCESSES,
        concurrency=THROUGHPUT_CONCURRENCY, executor="AsyncExecutor", clock=CLOCK,
    )


async def io_bound(options) -> None:
    function = wait_io_async if options.variant == "async" else wait_io
    done, seconds = await drain(options, function, options.variant, options.processes, options.concurrency)
    executor = EXECUTORS[options.variant].rpartition(".")[2]
    protocol.emit_io_bound(PEER, done, seconds, clock=CLOCK, peer=PEER, version=VERSION, jobs=options.jobs,
                           variant=options.variant, processes=options.processes,
                           concurrency=options.concurrency, executor=executor)


async def drain(options, function, variant: str, processes: int, concurrency: int) -> tuple[int, float]:
    """Pushes ``options.jobs`` jobs, drains them with ``processes`` workers; the jobs that
    succeeded and the seconds from the first start to the last completion."""
    async with open_app(protocol.as_harness(options.dsn)) as chancy:
        await prepare(chancy, EXECUTORS[variant], concurrency)
        async for _ in chancy.push_many([function.job] * options.jobs):
            pass
        protocol.say(f"{options.jobs} jobs queued; draining with {processes} process(es), "
                     f"concurrency {concurrency}, {EXECUTORS[variant]}")

        all_recorded_at = None

        async def count_succeeded() -> int:
            nonlocal all_recorded_at
            async with chancy.pool.connection() as connection:
                cursor = await connection.execute(
                    "SELECT count(*), clock_timestamp() FROM chancy_jobs WHERE state = 'succeeded'")
                succeeded, now = await cursor.fetchone()
            if succeeded >= options.jobs and all_recorded_at is None:
                all_recorded_at = now
            return succeeded

        await protocol.run_workers_until_finished(__file__, options.dsn, processes, [], count_succeeded, options.jobs)
        async with chancy.pool.connection() as connection:
            cursor = await connection.execute(
                "SELECT count(*), min(started_at) FROM chancy_jobs WHERE state = 'succeeded'")
            done, first_start = await cursor.fetchone()
        if all_recorded_at is None:  # not all finished: up to the last one that did
            async with chancy.pool.connection() as connection:
                cursor = await connection.execute("SELECT max(completed_at) FROM chancy_jobs WHERE state = 'succeeded'")
                (all_recorded_at,) = await cursor.fetchone()
        return done, (all_recorded_at - first_start).total_seconds()


async def defer(options) -> None:
    async with open_app(options.dsn) as chancy:
        await prepare(chancy, Chancy.Executor.Async, 1)

        async def push_many(size: int) -> None:
            async for _ in chancy.push_many([noop.job] * size):
                pass

        await protocol.measure_defers(
            PEER, lambda: chancy.push(noop), push_many, single=options.single, bulk=options.bulk,
            peer=PEER, version=VERSION, single_api="Chancy.push(job)",
            bulk_api="Chancy.push_many(jobs), its default batches of 1,000 per transaction",
        )


async def latency(options) -> None:
    async with open_app(protocol.as_harness(options.dsn)) as chancy:
        await prepare(chancy, Chancy.Executor.Async, 1)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "starts")
            worker = protocol.spawn_worker(__file__, options.dsn, environment={protocol.LATENCY_FILE_VARIABLE: path})
            try:
                await protocol.measure_latency(
                    PEER, lambda number: chancy.push(record_start.job.with_kwargs(number=number)), path,
                    samples=options.samples, peer=PEER, version=VERSION, concurrency=1,
                )
            finally:
                protocol.stop_worker(worker)


async def work(options) -> None:
    """One worker process, serving the queue as declared, until SIGTERM (chancy's own handler)."""
    async with open_app(options.dsn) as chancy, Worker(chancy) as worker:
        await worker.wait_for_shutdown()


def main() -> None:
    options = protocol.parser(__doc__.splitlines()[0]).parse_args()
    workload = {"throughput": throughput, "defer": defer, "latency": latency, "io_bound": io_bound,
                "worker": work}[options.workload]
    asyncio.run(workload(options))


if __name__ == "__main__":
    main()
