"""The ratios derived from one run's figures, from figures made up here."""
from __future__ import annotations

from pathlib import Path

from benchmarks import paired
from benchmarks.context import RunContext
from benchmarks.figures import Figures
from benchmarks.ratios import add_ratios

ONE_AT_A_TIME = {"batch_size": 1, "synchronous_commit": "on"}


def test_one_job_at_a_time_is_set_against_the_one_commit_ceiling_of_as_many_clients(tmp_path: Path) -> None:
    figures = Figures(tmp_path / "latest.jsonl")
    # Several jobs at once commit many jobs together: not a figure for the one-commit ceiling.
    figures.add("throughput", 5000.0, "jobs/s", workers=2, concurrency=50, **ONE_AT_A_TIME)
    figures.add("throughput", 900.0, "jobs/s", workers=2, **ONE_AT_A_TIME)
    figures.add("limit_drain_one_commit", 3600.0, "jobs/s", clients=2)
    figures.add("limit_drain_one_commit", 2000.0, "jobs/s", clients=1)
    add_ratios(figures)
    found = [figure for figure in figures.measured if figure.name == "throughput_ratio_vs_limit_one_commit"]
    assert [(figure.value, figure.params["denominator"]) for figure in found] == [(0.25, "limit_drain_one_commit clients=2")]


def test_the_latency_ratio_against_a_peer_is_the_median_of_the_rounds_ratios(tmp_path: Path) -> None:
    context = RunContext(server=None, figures=Figures(tmp_path / "latest.jsonl"), quick=True, peers=["pgqueuer"])  # type: ignore[arg-type]
    ours = [{"latency_p50": 2.0, "latency_p99": 4.0}, {"latency_p50": 6.0, "latency_p99": 4.0}, {"latency_p50": 3.0, "latency_p99": 4.0}]
    theirs = [{f"latency_{label}_pgqueuer": {"value": value, "unit": "ms"} for label, value in (("p50", p50), ("p99", 8.0))}
              for p50 in (4.0, 3.0, 2.0)]  # fmt: skip
    paired.add_peer_ratios(context, "pgqueuer", ours, theirs, ["latency_p50", "latency_p99"])
    # Round by round 0.5, 2.0, 1.5: the median is 1.5, where the ratio of the medians would be 1.0.
    assert context.figures.find("latency_p50_ratio_vs_pgqueuer").value == 1.5  # type: ignore[union-attr]
    assert context.figures.find("latency_p99_ratio_vs_pgqueuer").value == 0.5  # type: ignore[union-attr]
