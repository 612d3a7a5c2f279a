"""What a peer script shares with the harness: the JSON lines it prints, the options it takes,
and the file in which a task records when it started (the latency workload).

The peer scripts run under the peers' virtualenv (benchmarks/.peers-venv), not cabbage's, so
they import nothing from cabbage or from the benchmarks package: only this module, which sits
beside them and uses the standard library alone.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any

# The task of the latency workload appends "<number> <time.time()>" to this file.
LATENCY_FILE_VARIABLE = "BENCH_LATENCY_FILE"
# The task of the locks workload appends "<lock> <start> <end>" (time.time()) to this file.
RUNS_FILE_VARIABLE = "BENCH_RUNS_FILE"


def emit(name: str, value: float, unit: str, **params: Any) -> None:
    """One figure, as one JSON line on stdout, which the harness reads."""
    print(json.dumps({"name": name, "value": value, "unit": unit, "params": params}), flush=True)


def say(message: str) -> None:
    """Progress for a human, on stderr (stdout carries figures only)."""
    print(f"  {os.path.basename(sys.argv[0])}: {message}", file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    """The options every peer script takes; each adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("workload", choices=["throughput", "defer", "latency", "worker"])
    parser.add_argument("--dsn", required=True, help="a fresh database, to which the script adds its schema")
    parser.add_argument("--jobs", type=int, default=20_000, help="throughput: jobs to drain")
    parser.add_argument("--single", type=int, default=2_000, help="defer: single defer calls")
    parser.add_argument("--bulk", type=int, default=100_000, help="defer: jobs in the one bulk call")
    parser.add_argument("--samples", type=int, default=500, help="latency: jobs deferred one at a time")
    return parser


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
