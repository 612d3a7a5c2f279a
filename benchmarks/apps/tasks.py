"""The tasks of the benchmarks: a no-op, so that a job costs what cabbage costs and nothing else,
one that records when it started (the latency workload), one that records when it ran (the
locks workload) and one that runs a while first (the failover workload), two that wait 50 ms,
one with time.sleep and one with asyncio.sleep (the io_bound workload), and one that runs until
it is aborted (the abort_latency workload).

    cabbage-supervisor --app benchmarks.apps.tasks:task_manager --workers 2

The harness declares the same tasks on a TaskManager of its own (``make_app(dsn)``) to defer
the jobs into each workload's database.
"""
from __future__ import annotations

import time

import cabbage
from benchmarks.peers import protocol


def noop() -> None:
    """Does nothing."""


async def noop_async() -> None:
    """Does nothing, on the event loop (the drain of async tasks, as pgqueuer, oban and chancy run theirs)."""


def record_start(number: int) -> None:
    """Appends its number and time.time() to $BENCH_LATENCY_FILE, first thing."""
    protocol.record_start(number)


def record_run(line: str) -> None:
    """Appends "<line> <start> <end>" (time.time()) to $BENCH_RUNS_FILE: when it really ran."""
    protocol.record_run(line, time.time())


def hold_and_record(line: str, seconds: float) -> None:
    """Runs ``seconds``, then records when it ran, as record_run does (the failover workload)."""
    started = time.time()
    time.sleep(seconds)
    protocol.record_run(line, started)


def wait_io() -> None:
    """Waits 50 ms (protocol.IO_WAIT_S) in time.sleep: a thread's worth of I/O."""
    protocol.wait_io()


async def wait_io_async() -> None:
    """Waits 50 ms (protocol.IO_WAIT_S) in asyncio.sleep: an event loop's worth of I/O."""
    await protocol.wait_io_async()


def run_until_aborted() -> None:
    """Polls should_abort() every millisecond, for up to a minute, and stops once it is asked to
    (the abort_latency workload)."""
    context = cabbage.current_job()
    deadline = time.monotonic() + 60
    while not context.should_abort():
        if time.monotonic() > deadline:
            raise TimeoutError("no abort came within a minute")
        time.sleep(0.001)
    raise cabbage.JobAborted()


def make_app(dsn: str | None = None) -> cabbage.TaskManager:
    """A TaskManager with the benchmark tasks, on ``dsn`` (None: CABBAGE_DSN)."""
    app = cabbage.TaskManager() if dsn is None else cabbage.TaskManager(dsn=dsn)
    app.task(name="noop")(noop)
    app.task(name="noop_async")(noop_async)
    app.task(name="record_start")(record_start)
    app.task(name="record_run")(record_run)
    app.task(name="hold_and_record")(hold_and_record)
    app.task(name="wait_io")(wait_io)
    app.task(name="wait_io_async")(wait_io_async)
    app.task(name="run_until_aborted")(run_until_aborted)
    return app


task_manager = make_app()
