"""Latency: one job at a time to an idle supervisor (--workers 1), from the defer call's start to
the task's first line.

Both ends read time.time() (one host, one clock): the harness just before ``defer()``, the
task first thing, into a file. 500 jobs with gaps of 10 to 20 ms, after 20 warm-up jobs that also
prove the worker listens. Figures: p50, p95, p99 and the mean, in ms.

cabbage and each compared peer run in alternating rounds (cabbage, then every peer, three
times; one with --quick), each round in a fresh database: the shared machine's load moves
within minutes, and two runs a minute apart can differ by more than the peers do. Each system's
figure is the median of its rounds' figures, and each ratio against a peer the median of the
rounds' ratios, as for the throughput workload.
"""
from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections import defaultdict

from benchmarks import peer_runs
from benchmarks import paired
from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.peers import protocol
from benchmarks.supervised import Supervisor

WARMUP = 20


PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
RATIO_LABELS = ("p50", "p99")


def run(context: RunContext) -> None:
    samples = context.scale(500, 100)
    rounds = context.scale(3, 1)
    ours: list[dict[str, float]] = []  # per round: latency_<label> -> ms
    calls_ms: list[float] = []
    wakes_ms: list[float] = []
    theirs: dict[str, list[paired.PeerRound]] = defaultdict(list)
    for round_number in range(1, rounds + 1):
        context.say(f"latency: round {round_number}/{rounds}, {samples} jobs, one at a time, to an idle --workers 1")
        figures, call_ms, wake_ms = measure_cabbage(context, samples)
        ours.append(figures)
        calls_ms += call_ms
        wakes_ms += wake_ms
        for peer in context.peers:
            with context.server.fresh_database(f"latency_{peer}", cabbage_schema=False) as dsn:
                context.say(f"latency: round {round_number}/{rounds}, {samples} jobs, {peer}")
                theirs[peer].append(paired.by_name(peer_runs.run(peer, "latency", dsn, timeout_s=300, samples=samples)))
    params = {"samples": samples, "workers": 1, "gap_ms": "10-20", "clock": "time.time() on both sides (one host)"}
    paired.add_medians(context, ours, units=dict.fromkeys(ours[0], "ms"), params=dict.fromkeys(ours[0], params))
    # How much of it is the defer call itself (insert, NOTIFY, commit): the rest is the worker
    # waking, claiming and calling the task.
    # The slowest samples are mostly slow commits of the defer itself (a busy disk): the wake
    # figures, from the defer's return to the task's start, are the worker's part alone.
    for label, fraction in (("p50", 0.50), ("p99", 0.99)):
        context.figures.add(f"latency_defer_call_{label}", round(protocol.percentile(sorted(calls_ms), fraction), 3), "ms",
                            samples=samples * rounds, workers=1)
        context.figures.add(f"latency_wake_{label}", round(protocol.percentile(sorted(wakes_ms), fraction), 3), "ms",
                            samples=samples * rounds, workers=1, measure="defer call's return to the task's first line")
    for peer, peer_rounds in theirs.items():
        paired.add_peer_medians(context, peer_rounds)
        paired.add_peer_ratios(context, peer, ours, peer_rounds, [f"latency_{label}" for label in RATIO_LABELS])


def measure_cabbage(context: RunContext, samples: int) -> tuple[dict[str, float], list[float], list[float]]:
    """One round against a fresh supervisor: its percentiles and mean (ms), and each sample's
    defer call and wake-up times (ms)."""
    with context.server.fresh_database("latency") as dsn, tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "starts")
        environment = {protocol.LATENCY_FILE_VARIABLE: path}
        with Supervisor(dsn, 1, environment=environment) as supervisor:
            supervisor.wait_for_workers()
            deferred_at, returned_at, started_at = defer_one_at_a_time(dsn, path, samples)
    latencies_ms = sorted((started_at[n] - deferred_at[n]) * 1000 for n in deferred_at if n in started_at)
    lost = samples - len(latencies_ms)
    if lost:
        context.say(f"latency: {lost} of {samples} jobs did not start within 30 s")
    figures = {f"latency_{label}": protocol.percentile(latencies_ms, fraction) for label, fraction in PERCENTILES}
    figures["latency_mean"] = statistics.fmean(latencies_ms)
    call_ms = [(returned_at[n] - deferred_at[n]) * 1000 for n in deferred_at]
    wake_ms = [(started_at[n] - returned_at[n]) * 1000 for n in deferred_at if n in started_at]
    return figures, call_ms, wake_ms


def defer_one_at_a_time(
    dsn: str, path: str, samples: int
) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """When each defer call started and returned, and when each task started (time.time())."""
    app = make_app(dsn)
    record_start = app.get_task("record_start")
    for number in range(-WARMUP, 0):
        record_start.defer(number)
    protocol.wait_for_starts(path, set(range(-WARMUP, 0)), timeout_s=60)
    deferred_at: dict[int, float] = {}
    returned_at: dict[int, float] = {}
    for number in range(samples):
        time.sleep(random.uniform(0.010, 0.020))
        deferred_at[number] = time.time()
        record_start.defer(number)
        returned_at[number] = time.time()
    started_at = protocol.wait_for_starts(path, set(deferred_at), timeout_s=30)
    app.store.close()
    return deferred_at, returned_at, started_at
