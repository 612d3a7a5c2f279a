"""The tasks of the benchmarks: a no-op, so that a job costs what cabbage costs and nothing else,
and one that records when it started (the latency workload).

    cabbage-supervisor --app benchmarks.apps.tasks:task_manager --workers 2

The harness declares the same tasks on a TaskManager of its own (``make_app(dsn)``) to defer
the jobs into each workload's database.
"""
from __future__ import annotations

import cabbage
from benchmarks.peers import protocol


def noop() -> None:
    """Does nothing."""


def record_start(number: int) -> None:
    """Appends its number and time.time() to $BENCH_LATENCY_FILE, first thing."""
    protocol.record_start(number)


def make_app(dsn: str | None = None) -> cabbage.TaskManager:
    """A TaskManager with the benchmark tasks, on ``dsn`` (None: CABBAGE_DSN)."""
    app = cabbage.TaskManager() if dsn is None else cabbage.TaskManager(dsn=dsn)
    app.task(name="noop")(noop)
    app.task(name="record_start")(record_start)
    return app


task_manager = make_app()
