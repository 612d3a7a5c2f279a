"""The figures derived from others of the same run (ratios), and the targets the figures aim at.

Every ratio is cabbage's figure over the other one's, measured in the same run: above 1,
cabbage is faster (for latencies, where lower is better, below 1 is better). A ratio whose
inputs were not measured in this run (a workload left out by --only, a peer not compared) is
not printed.
"""
from __future__ import annotations

import dataclasses
import operator
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.figures import Figure, Figures

PEERS = ("procrastinate", "pgqueuer", "oban", "chancy")


@dataclasses.dataclass(frozen=True)
class Ratio:
    name: str
    numerator: tuple[str, dict[str, Any]]
    denominator: tuple[str, dict[str, Any]]


def ratios() -> list[Ratio]:
    # The throughput ratios against the peers are the throughput workload's own: measured in
    # alternating rounds (see workloads/throughput.py).
    found = [Ratio("defer_single_ratio_vs_limit", ("defer_single", {}), ("limit_defer", {}))]
    # Same run, same minute: the shared machine's load moves all three alike.
    found.append(Ratio("defer_single_ratio_vs_raw_insert", ("defer_single", {}), ("defer_single_raw_insert", {})))
    found.append(Ratio("defer_single_ratio_vs_commit_floor", ("defer_single", {}), ("defer_single_commit_floor", {})))
    # The ratios against the peers of the defer and latency workloads are the workloads' own,
    # from alternating rounds (benchmarks/paired.py).
    # concurrency None: one job at a time (the figures of several at once name theirs).
    drains = [{"workers": workers, "batch_size": 1, "synchronous_commit": "on", "concurrency": None} for workers in (1, 2, 4, 8)]
    drains += [{"workers": 2, "batch_size": 10, "synchronous_commit": commit, "concurrency": None} for commit in ("on", "off")]
    for drain in drains:
        found.append(Ratio("throughput_ratio_vs_limit", ("throughput", drain),
                           ("limit_drain", {"clients": drain["workers"]})))
    # One job at a time is one commit per job: its ceiling is the one-commit script's.
    for drain in drains[:2]:
        found.append(Ratio("throughput_ratio_vs_limit_one_commit", ("throughput", drain),
                           ("limit_drain_one_commit", {"clients": drain["workers"]})))
    # The default configuration (one job at a time, every commit waited for) against pgqueuer's
    # best: the same run, not paired rounds.
    found.append(Ratio("throughput_default_ratio_vs_pgqueuer", ("throughput", drains[1]), ("throughput_pgqueuer", {})))
    return found


def add_ratios(figures: Figures) -> None:
    for ratio in ratios():
        numerator = figures.find(ratio.numerator[0], **ratio.numerator[1])
        denominator = figures.find(ratio.denominator[0], **ratio.denominator[1])
        if numerator is None or denominator is None or not denominator.value:
            continue
        figures.add(ratio.name, round(numerator.value / denominator.value, 3), "ratio",
                    numerator=describe(numerator), denominator=describe(denominator))


def describe(figure: Figure) -> str:
    shown = {key: value for key, value in figure.params.items() if key in ("workers", "batch_size", "synchronous_commit", "clients", "peer")}
    return figure.name + "".join(f" {key}={value}" for key, value in shown.items())


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    params: dict[str, Any]
    compare: Callable[[float, float], bool]
    threshold: float
    says: str


TARGETS = [
    *[Target(f"throughput_ratio_vs_{peer}", {}, operator.ge, 1.0, f"--workers 2 --concurrency 50 --prefetch 50, no line per job >= {peer}'s best")
      for peer in ("pgqueuer", "oban", "chancy")],
    Target("throughput_default_ratio_vs_pgqueuer", {}, operator.ge, 0.8, "--workers 2, the defaults, >= 0.8x pgqueuer's best"),
    Target("throughput_one_at_a_time_ratio_vs_pgqueuer", {}, operator.ge, 0.8,
           "--workers 2 --prefetch 50, one job at a time >= 0.8x pgqueuer's best"),
    Target("throughput_ratio_vs_procrastinate", {}, operator.ge, 3.0, "--workers 2, one at a time >= 3x procrastinate"),
    Target("claim_backlog_ratio", {}, operator.ge, 0.9, "claims behind the backlog >= 0.9x the empty table's"),
    Target("latency_p50", {}, operator.lt, 2.5, "defer-to-start p50 < 2.5 ms"),
    Target("latency_p99", {}, operator.lt, 3.5, "defer-to-start p99 < 3.5 ms"),
    Target("scheduled_delay_p99", {}, operator.lt, 50, "a scheduled job starts < 50 ms after its time, p99"),
    Target("abort_latency_p99", {}, operator.lt, 1_000, "a running job's worker stops it < 1 s after the abort, p99"),
    Target("defer_single", {}, operator.ge, 4_000, "single defer >= 4,000 jobs/s"),
    Target("defer_bulk", {}, operator.ge, 100_000, "bulk defer >= 100,000 jobs/s"),
    Target("memory_child_beyond_app", {"state": "after jobs"}, operator.lt, 40, "a child < 40 MB beyond the app"),
    Target("idle_master_cpu", {}, operator.lt, 1.0, "idle master < 1 % of a core"),
    Target("locks_overlaps", {}, operator.eq, 0, "no two jobs of a lock overlap"),
    Target("locks_out_of_order", {}, operator.eq, 0, "a lock's jobs start in creation order"),
    # io_bound: cabbage --workers 2 --concurrency 50 against each peer's configurations.
    *[Target(f"io_bound_ratio_vs_{peer}", {}, operator.ge, 1.0, f"I/O-bound jobs/s >= {peer}'s")
      for peer in PEERS],
    Target("io_bound_rss_ratio_vs_lightest_peer", {}, operator.le, 1.0, "I/O-bound memory (RSS) <= the lightest peer's"),
    Target("io_bound_connections_ratio_vs_fewest_peer", {}, operator.le, 1.0,
           "I/O-bound connections <= the fewest of any peer"),
]


def print_summary(figures: Figures) -> None:
    """Which targets this run met, on stderr: information, never an exit status."""
    lines = []
    for target in TARGETS:
        measured = [f for f in figures.measured if f.name == target.name
                    and all(f.params.get(k) == v for k, v in target.params.items())]
        for figure in measured:
            verdict = "met   " if target.compare(figure.value, target.threshold) else "MISSED"
            lines.append(f"  {verdict} {target.says:<55} {figure.value:>12g} {figure.unit}")
    if lines:
        print("targets:", *lines, sep="\n", file=sys.stderr)
