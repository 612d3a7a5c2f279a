"""The io_bound workload's ratios, from measures made up here: round by round, then the median."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.context import RunContext
from benchmarks.figures import Figures
from benchmarks.workloads.io_bound import CABBAGE_TARGETS, Measure, System, add_ratios

SYNC_TARGET = CABBAGE_TARGETS[0]
PROCRASTINATE = System("sync", 1, 100, "procrastinate")
CHANCY = System("sync", 1, 100, "chancy")


def measure(rate: float, rss_mb: float = 100.0, connections: int = 5) -> Measure:
    return Measure(rate, rss_mb, rss_mb / 2, connections, {})


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    return RunContext(server=None, figures=Figures(tmp_path / "latest.jsonl"), quick=True, peers=[])  # type: ignore[arg-type]


def value(context: RunContext, name: str, **params: object) -> float:
    figure = context.figures.find(name, **params)
    assert figure is not None, f"no {name} {params}"
    return figure.value


def test_the_ratio_is_the_median_of_the_rounds_ratios(context: RunContext) -> None:
    measures = {SYNC_TARGET: [measure(1000), measure(900), measure(1800)],
                PROCRASTINATE: [measure(500), measure(300), measure(1000)]}
    add_ratios(context, measures)
    # Rounds: 2.0, 3.0, 1.8; the median of the medians would have been 1000 / 500 = 2.0.
    assert value(context, "io_bound_ratio_vs_procrastinate", variant="sync", processes=1) == 2.0


def test_a_round_either_side_failed_is_left_out(context: RunContext) -> None:
    measures = {SYNC_TARGET: [None, measure(900), measure(1200)],
                PROCRASTINATE: [measure(500), None, measure(400)]}
    add_ratios(context, measures)
    assert value(context, "io_bound_ratio_vs_procrastinate", rounds=1) == 3.0


def test_memory_and_connections_are_compared_with_the_lightest_peer(context: RunContext) -> None:
    measures = {SYNC_TARGET: [measure(1000, rss_mb=60, connections=5)],
                PROCRASTINATE: [measure(500, rss_mb=40, connections=5)],
                CHANCY: [measure(900, rss_mb=80, connections=2)]}
    add_ratios(context, measures)
    assert value(context, "io_bound_rss_ratio_vs_procrastinate") == 1.5
    assert value(context, "io_bound_rss_ratio_vs_lightest_peer", variant="sync") == 1.5
    assert value(context, "io_bound_connections_ratio_vs_fewest_peer", variant="sync") == 2.5


def test_without_cabbages_target_configuration_there_is_no_ratio(context: RunContext) -> None:
    add_ratios(context, {PROCRASTINATE: [measure(500)]})
    assert context.figures.measured == []


def test_a_peer_of_the_other_variant_is_not_compared(context: RunContext) -> None:
    add_ratios(context, {SYNC_TARGET: [measure(1000)], System("async", 1, 100, "oban"): [measure(500)]})
    assert context.figures.find("io_bound_ratio_vs_oban") is None
