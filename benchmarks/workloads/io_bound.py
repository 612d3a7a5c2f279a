"""I/O-bound: 10,000 jobs that each wait 50 ms, drained by cabbage and by each peer, 100 at once.

For each system: jobs per second (database clock, first start to last finish), the peak memory
of all its processes (RSS summed, and PSS summed, which counts a page shared by forked processes
once) and the peak number of database connections it held, sampled every 50 ms while it runs
(benchmarks/footprint.py). Each job waits protocol.IO_WAIT_S: ``time.sleep`` in the sync variant,
``await asyncio.sleep`` in the async one, where the system runs that kind of job.

Every configuration runs 100 jobs at once in all, at most 2,000 jobs/s:

- cabbage ``--workers 2 --concurrency 50 --prefetch 50`` (threads for the ``def`` task, an event
  loop for the ``async def`` one): the configuration the target names, with 50 more jobs started
  per child, waiting for a slot (still 100 running at once). Until this cabbage-supervisor has
  ``--concurrency``, it is not run: one line on stderr says so, and no ratio is printed.
- cabbage ``--workers 1 --concurrency 100 --prefetch 100`` (async): the fewest processes a
  supervisor runs, for its memory and connections beside the peers of one process; no ratio.
- cabbage ``--workers 2``, one job at a time per child (2 at once, not 100), on fewer jobs: the
  baseline, labelled ``baseline`` in its params, compared with nothing.
- procrastinate, concurrency 100 in one process and 50 in each of two; pgqueuer, two processes
  (its reference configuration) capped at 50 jobs each, batches of 10; oban, one process with a
  queue limit of 100, async only; chancy, one worker of concurrency 100, AsyncExecutor for the
  async variant and ThreadedExecutor for the sync one. Why each is configured so is in its
  script's docstring and in docs/performance.md.

Rounds alternate: every configuration once per round, in the same order, three rounds (one with
--quick). A figure is the median of its rounds; a ratio (cabbage's ``--concurrency 50`` over the
peer's configuration, same variant, measured in the same round) is the median of the rounds'.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from typing import Any

from benchmarks import peer_runs
from benchmarks.context import RunContext
from benchmarks.footprint import FootprintSampler
from benchmarks.peers.protocol import IO_WAIT_S
from benchmarks.supervised import Supervisor, supervisor_has_option
from benchmarks.workloads.throughput import defer_jobs, drain_rate

CABBAGE_TASKS = {"sync": "wait_io", "async": "wait_io_async"}
CLOCK = "database: first start to last finish"


@dataclasses.dataclass(frozen=True)
class System:
    """One configuration of one system: cabbage when ``peer`` is None."""

    variant: str  # sync or async
    processes: int
    concurrency: int  # per process
    peer: str | None = None
    baseline: bool = False  # cabbage one job at a time: a reference, compared with nothing
    prefetch: int = 0  # cabbage's --prefetch

    @property
    def suffix(self) -> str:
        return f"_{self.peer}" if self.peer else ""

    def describe(self) -> str:
        if self.baseline:
            return f"cabbage --workers {self.processes}, one job at a time per child: baseline ({self.variant})"
        if self.peer is None:
            prefetch = f" --prefetch {self.prefetch}" if self.prefetch else ""
            return f"cabbage --workers {self.processes} --concurrency {self.concurrency}{prefetch} ({self.variant})"
        return f"{self.peer}, {self.processes} process(es) x {self.concurrency} ({self.variant})"


@dataclasses.dataclass(frozen=True)
class Measure:
    rate: float  # jobs/s
    rss_mb: float
    pss_mb: float
    connections: int
    params: dict[str, Any]  # what the system reported about its configuration


# With 50 more jobs started per child, which take the slots freed while outcomes are on their
# way to the database: 100 jobs run at once in all, as for every peer.
CABBAGE_TARGETS = [System("sync", 2, 50, prefetch=50), System("async", 2, 50, prefetch=50)]
CABBAGE_BASELINE = System("sync", 2, 1, baseline=True)
# The fewest processes a supervisor runs: its master and one child of 100 slots. Measured beside
# the target for its memory and connections (against the peers of one process), with no ratio.
CABBAGE_ONE_CHILD = System("async", 1, 100, prefetch=100)
PEER_SYSTEMS = [
    System("sync", 1, 100, "procrastinate"), System("async", 1, 100, "procrastinate"),
    System("sync", 2, 50, "procrastinate"), System("async", 2, 50, "procrastinate"),
    System("sync", 2, 50, "pgqueuer"), System("async", 2, 50, "pgqueuer"),
    # oban 0.7 calls a def job on its event loop: a time.sleep would stall every other job.
    System("async", 1, 100, "oban"),
    System("sync", 1, 100, "chancy"), System("async", 1, 100, "chancy"),
]


def run(context: RunContext) -> None:
    jobs = context.scale(10_000, 2_000)
    baseline_jobs = context.scale(600, 200)  # 2 jobs at once: 600 jobs take 15 s
    rounds = context.scale(3, 1)
    systems = [CABBAGE_BASELINE, *[system for system in PEER_SYSTEMS if system.peer in context.peers]]
    if supervisor_has_option("--concurrency"):
        systems[:0] = [*CABBAGE_TARGETS, CABBAGE_ONE_CHILD]
    else:
        context.say("io_bound: cabbage --workers 2 --concurrency 50 NOT RUN: this cabbage-supervisor has no "
                    "--concurrency option yet; no ratio against the peers in this run")
    measures: dict[System, list[Measure | None]] = defaultdict(list)
    for round_number in range(1, rounds + 1):
        for system in systems:
            count = baseline_jobs if system.baseline else jobs
            context.say(f"io_bound: round {round_number}/{rounds}, {count} jobs, {system.describe()}")
            try:
                measures[system].append(measure(context, system, count))
            except Exception as exc:  # one system that fails must not hide the others
                context.say(f"io_bound: {system.describe()} failed: {exc}")
                measures[system].append(None)
    for system, found in measures.items():
        add_medians(context, system, [m for m in found if m is not None],
                    jobs=baseline_jobs if system.baseline else jobs, rounds=rounds)
    add_ratios(context, measures)


def measure(context: RunContext, system: System, jobs: int) -> Measure:
    if system.peer is None:
        return measure_cabbage(context, system, jobs)
    return measure_peer(context, system, jobs)


def measure_cabbage(context: RunContext, system: System, jobs: int) -> Measure:
    with context.server.fresh_database("io_bound") as dsn:
        defer_jobs(dsn, jobs, CABBAGE_TASKS[system.variant])
        with Supervisor(dsn, system.processes, concurrency=system.concurrency, prefetch=system.prefetch) as supervisor, \
                FootprintSampler(dsn, supervisor.pid) as sampler:
            supervisor.wait_until_drained(jobs, timeout_s=900)
        rate, _ = drain_rate(dsn)
    peaks = sampler.peaks
    params: dict[str, Any] = {"workers": system.processes, "concurrency": system.concurrency}
    if system.prefetch:
        params["prefetch"] = system.prefetch
    return Measure(rate, peaks.rss_mb, peaks.pss_mb, peaks.connections, params)


def measure_peer(context: RunContext, system: System, jobs: int) -> Measure:
    assert system.peer is not None
    with context.server.fresh_database(f"io_bound_{system.peer}", cabbage_schema=False) as dsn:
        process = peer_runs.start(system.peer, "io_bound", dsn, jobs=jobs, variant=system.variant,
                                  processes=system.processes, concurrency=system.concurrency)
        # The script's own process defers and waits, as the harness does for cabbage: not counted.
        with FootprintSampler(dsn, process.pid, include_root=False) as sampler:
            records = peer_runs.collect(system.peer, "io_bound", process, timeout_s=900)
    found = [record for record in records if record["name"] == f"io_bound_{system.peer}"]
    if not found:
        raise RuntimeError(f"{system.peer} printed no io_bound_{system.peer} figure")
    peaks = sampler.peaks
    return Measure(found[0]["value"], peaks.rss_mb, peaks.pss_mb, peaks.connections, found[0]["params"])


def add_medians(context: RunContext, system: System, found: list[Measure], *, jobs: int, rounds: int) -> None:
    if not found:
        return
    params = {**found[0].params, "variant": system.variant, "jobs": jobs, "rounds": len(found), "wait_s": IO_WAIT_S}
    clock = params.pop("clock", CLOCK)
    if system.baseline:
        params["baseline"] = "one job at a time per child, before --concurrency"
    if len(found) < rounds:
        params["rounds_failed"] = rounds - len(found)
    of = "median of the rounds" if len(found) > 1 else "one round"
    context.figures.add(f"io_bound{system.suffix}", statistics.median(m.rate for m in found), "jobs/s",
                        **params, clock=clock, of=of)
    context.figures.add(f"io_bound_rss{system.suffix}", statistics.median(m.rss_mb for m in found), "MB",
                        **params, measure="peak of the RSS summed over its processes", of=of)
    context.figures.add(f"io_bound_pss{system.suffix}", statistics.median(m.pss_mb for m in found), "MB",
                        **params, measure="peak of the PSS summed over its processes", of=of)
    context.figures.add(f"io_bound_connections{system.suffix}", statistics.median(m.connections for m in found),
                        "connections", **params, measure="peak of its client backends in pg_stat_activity", of=of)


def add_ratios(context: RunContext, measures: dict[System, list[Measure | None]]) -> None:
    """cabbage's target configuration over each peer's, same variant, round by round; and over the
    lightest peer's memory and the fewest connections of any peer."""
    for target in CABBAGE_TARGETS:
        ours = measures.get(target)
        if not ours:
            continue
        peers = [system for system in measures if system.peer is not None and system.variant == target.variant]
        for peer_system in peers:
            pairs = [(mine, theirs) for mine, theirs in zip(ours, measures[peer_system])
                     if mine is not None and theirs is not None]
            if not pairs:
                continue
            params = {"variant": target.variant, "peer": peer_system.peer, "processes": peer_system.processes,
                      "concurrency": peer_system.concurrency, "rounds": len(pairs),
                      "numerator": target.describe(), "denominator": peer_system.describe(),
                      "of": "median of the rounds' ratios"}
            for figure, field in (("io_bound", "rate"), ("io_bound_rss", "rss_mb"),
                                  ("io_bound_connections", "connections")):
                ratios = [getattr(mine, field) / getattr(theirs, field) for mine, theirs in pairs
                          if getattr(theirs, field)]
                if ratios:
                    context.figures.add(f"{figure}_ratio_vs_{peer_system.peer}",
                                        round(statistics.median(ratios), 3), "ratio", **params)
        add_ratio_vs_best(context, target, ours, peers, measures)


def add_ratio_vs_best(context: RunContext, target: System, ours: list[Measure | None], peers: list[System],
                      measures: dict[System, list[Measure | None]]) -> None:
    """The target's median memory and connections over the smallest median of any peer."""
    mine = [m for m in ours if m is not None]
    theirs = {system: [m for m in measures[system] if m is not None] for system in peers}
    theirs = {system: found for system, found in theirs.items() if found}
    if not mine or not theirs:
        return
    for figure, field, best_name in (("io_bound_rss", "rss_mb", "lightest"),
                                     ("io_bound_connections", "connections", "fewest")):
        best_system, best = min(((system, statistics.median(getattr(m, field) for m in found))
                                 for system, found in theirs.items()), key=lambda pair: pair[1])
        if best:
            context.figures.add(f"{figure}_ratio_vs_{best_name}_peer",
                                round(statistics.median(getattr(m, field) for m in mine) / best, 3), "ratio",
                                variant=target.variant, numerator=target.describe(),
                                denominator=best_system.describe(), of="medians of the rounds")
