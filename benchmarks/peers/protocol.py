"""What a peer script shares with the harness: the JSON lines it prints, the options it takes,
the file in which a task records when it started (the latency workload), and how its own
process stays out of what the I/O-bound workload measures.

The peer scripts run under the peers' virtualenvs (benchmarks/.peers-venv*), not cabbage's, so
they import nothing from cabbage or from the benchmarks package: only this module, which sits
beside them and uses the standard library alone.

The io_bound workload: the script installs its schema, defers ``--jobs`` jobs that each wait
IO_WAIT_S (``time.sleep`` for ``--variant sync``, ``asyncio.sleep`` for ``async``), starts
``--processes`` worker processes of ``--concurrency`` each, waits until every job is finished,
stops them and prints ``io_bound_<peer>`` (jobs per second, database clock, first start to last
finish). Meanwhile the harness samples the memory of the script's descendants (not of the
script itself) and the database's connections, less those named HARNESS_APPLICATION_NAME:
the script's own connections must carry that name (``as_harness(dsn)``), its workers' not.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

# The task of the latency workload appends "<number> <time.time()>" to this file.
LATENCY_FILE_VARIABLE = "BENCH_LATENCY_FILE"
# The task of the locks workload appends "<lock> <start> <end>" (time.time()) to this file.
RUNS_FILE_VARIABLE = "BENCH_RUNS_FILE"
# What a job of the io_bound workload does: wait this long, nothing else.
IO_WAIT_S = 0.05
# The application_name of every connection of the harness and of a peer script's own process.
HARNESS_APPLICATION_NAME = "cabbage-benchmarks-harness"
WORKLOADS = ["throughput", "defer", "latency", "io_bound", "worker"]


def emit(name: str, value: float, unit: str, **params: Any) -> None:
    """One figure, as one JSON line on stdout, which the harness reads."""
    print(json.dumps({"name": name, "value": value, "unit": unit, "params": params}), flush=True)


def say(message: str) -> None:
    """Progress for a human, on stderr (stdout carries figures only)."""
    print(f"  {os.path.basename(sys.argv[0])}: {message}", file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    """The options every peer script takes; each adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--dsn", required=True, help="a fresh database, to which the script adds its schema")
    parser.add_argument("--jobs", type=int, default=20_000, help="throughput: jobs to drain")
    parser.add_argument("--single", type=int, default=2_000, help="defer: single defer calls")
    parser.add_argument("--bulk", type=int, default=100_000, help="defer: jobs in the one bulk call")
    parser.add_argument("--samples", type=int, default=500, help="latency: jobs deferred one at a time")
    parser.add_argument("--variant", choices=["sync", "async"], default="async",
                        help="io_bound: jobs that time.sleep or that await asyncio.sleep")
    parser.add_argument("--processes", type=int, default=1, help="io_bound: worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="io_bound: jobs at once per worker process")
    return parser


def as_harness(dsn: str) -> str:
    """The same database under HARNESS_APPLICATION_NAME, for the script's own connections."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return f"{dsn}{'&' if '?' in dsn else '?'}application_name={HARNESS_APPLICATION_NAME}"
    return f"{dsn} application_name={HARNESS_APPLICATION_NAME}"


def wait_io() -> None:
    """The sync job of the io_bound workload."""
    time.sleep(IO_WAIT_S)


async def wait_io_async() -> None:
    """The async job of the io_bound workload."""
    await asyncio.sleep(IO_WAIT_S)


def size_default_executor(threads: int) -> None:
    """Gives the running loop a default executor of ``threads`` threads.

    procrastinate runs a ``def`` task through asgiref's sync_to_async, and pgqueuer tells its
    users to wrap blocking code in asyncio.to_thread: both land in the loop's default executor,
    which has min(32, cores + 4) threads, 6 on two cores. With as many threads as the worker's
    concurrency, a worker runs as many sync jobs at once as it was told to.
    """
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sync-job"))


def spawn_worker(script: str, dsn: str, *options: str, environment: dict[str, str] | None = None) -> subprocess.Popen:
    """The script again, as a worker process (its ``worker`` workload), with our python."""
    return subprocess.Popen([sys.executable, script, "worker", "--dsn", dsn, *options],
                            env={**os.environ, **(environment or {})})


def stop_worker(worker: subprocess.Popen, signum: int = signal.SIGTERM, grace_s: float = 15.0) -> None:
    """Asks a worker process to stop; kills it if it has not within ``grace_s``."""
    if worker.poll() is None:
        worker.send_signal(signum)
    try:
        worker.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        say(f"worker {worker.pid} did not stop in {grace_s:.0f} s; killed")
        worker.kill()
        worker.wait()


async def run_workers_until_finished(script: str, dsn: str, processes: int, worker_options: list[str],
                                     count_finished: Callable[[], Awaitable[int]], expected: int,
                                     timeout_s: float = 600.0) -> None:
    """Starts ``processes`` workers of the script, waits until ``count_finished()`` (polled every
    50 ms) reaches ``expected`` (or a worker exits early, or the timeout passes), then stops
    them (SIGTERM)."""
    workers = [spawn_worker(script, dsn, *worker_options) for _ in range(processes)]
    try:
        deadline = time.monotonic() + timeout_s
        while (finished := await count_finished()) < expected:
            exited = [worker.pid for worker in workers if worker.poll() is not None]
            if exited or time.monotonic() > deadline:
                why = f"worker(s) {exited} exited" if exited else f"{timeout_s:.0f} s passed"
                say(f"{finished} of {expected} jobs finished when {why}")
                return
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            stop_worker(worker)


def emit_io_bound(peer_name: str, done: int, seconds: float, *,
                  clock: str = "database: first start to last finish", **params: Any) -> None:
    """The io_bound figure: jobs per second between the first start and the last finish."""
    emit(f"io_bound_{peer_name}", round(done / seconds, 1), "jobs/s", **params, wait_s=IO_WAIT_S, clock=clock)


async def measure_defers(peer_name: str, defer_one: Callable[[], Awaitable[Any]],
                         defer_many: Callable[[int], Awaitable[Any]], *, single: int, bulk: int,
                         single_api: str, bulk_api: str, **params: Any) -> None:
    """defer_single_<peer> (``single`` calls of ``defer_one``) and defer_bulk_<peer> (one call)."""
    started = time.perf_counter()
    for _ in range(single):
        await defer_one()
    emit(f"defer_single_{peer_name}", round(single / (time.perf_counter() - started), 1), "jobs/s",
         **params, calls=single, api=single_api)
    started = time.perf_counter()
    await defer_many(bulk)
    emit(f"defer_bulk_{peer_name}", round(bulk / (time.perf_counter() - started), 1), "jobs/s",
         **params, jobs=bulk, calls=1, api=bulk_api)


async def measure_latency(peer_name: str, defer_numbered: Callable[[int], Awaitable[Any]], path: str, *,
                          samples: int, warmup: int = 20, **params: Any) -> None:
    """Defers record_start jobs one at a time to an idle worker (which records into ``path``) and
    emits the latencies from each defer call's start to its task's start."""
    # The warm-up jobs also prove that the worker listens before the samples start.
    for number in range(-warmup, 0):
        await defer_numbered(number)
    wait_for_starts(path, set(range(-warmup, 0)), timeout_s=60)
    deferred_at: dict[int, float] = {}
    for number in range(samples):
        await asyncio.sleep(random.uniform(0.010, 0.020))
        deferred_at[number] = time.time()
        await defer_numbered(number)
    started_at = wait_for_starts(path, set(deferred_at), timeout_s=30)
    emit_latency(peer_name, deferred_at, started_at, **params, gap_ms="10-20")


def record_start(number: int) -> None:
    """Called first thing in the latency task: appends when it started (time.time())."""
    global _latency_file
    if _latency_file is None:
        _latency_file = open(os.environ[LATENCY_FILE_VARIABLE], "a", buffering=1)
    _latency_file.write(f"{number} {time.time()!r}\n")


_latency_file: Any = None
_runs_file: Any = None


def record_run(line: str, started: float) -> None:
    """Called last in the locks task: one line, written at once, with when it started and now."""
    global _runs_file
    if _runs_file is None:
        _runs_file = open(os.environ[RUNS_FILE_VARIABLE], "a", buffering=1)
    _runs_file.write(f"{line} {started!r} {time.time()!r}\n")


def read_starts(path: str) -> dict[int, float]:
    starts: dict[int, float] = {}
    with open(path) as lines:
        for line in lines:
            number, _, started = line.partition(" ")
            if started.strip():
                starts[int(number)] = float(started)
    return starts


def wait_for_starts(path: str, numbers: set[int], timeout_s: float) -> dict[int, float]:
    """The start times of the given job numbers, once all are recorded (or the timeout passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        starts = read_starts(path) if os.path.exists(path) else {}
        if numbers <= starts.keys() or time.monotonic() > deadline:
            return starts
        time.sleep(0.05)


def emit_latency(peer_name: str, deferred_at: dict[int, float], started_at: dict[int, float], **params: Any) -> None:
    """p50, p95 and p99 of defer-call-start to task-start, in milliseconds."""
    latencies_ms = sorted((started_at[n] - deferred_at[n]) * 1000 for n in deferred_at if n in started_at)
    if len(latencies_ms) < len(deferred_at):
        say(f"{len(deferred_at) - len(latencies_ms)} of {len(deferred_at)} jobs did not start within 30 s")
    if not latencies_ms:
        return
    params = {**params, "samples": len(deferred_at), "clock": "time.time() on both sides (one host)"}
    for label, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        emit(f"latency_{label}_{peer_name}", round(percentile(latencies_ms, fraction), 3), "ms", **params)
    emit(f"latency_mean_{peer_name}", round(statistics.fmean(latencies_ms), 3), "ms", **params)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]
