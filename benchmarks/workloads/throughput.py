"""Throughput: jobs deferred up front, then cabbage-supervisor drains them.

Jobs per second from the first job's started_at to the last job's finished_at, on the
database clock, for --workers 1, 2, 4, 8, --workers 2 --batch-size 10, and that batch again with
--synchronous-commit off; with the commits per job (pg_stat_database) that explain most of it.

With --compare, each peer drains the same number of no-op jobs in its best configuration of the
reference table, paired with the cabbage configuration its target names (pgqueuer with
--workers 2 --batch-size 10 --synchronous-commit off, as its target allows, procrastinate with
--workers 2, one job at a time and every commit waited for; oban and chancy, which have no
target, with the configuration that keeps their own promise about a finished job, see PAIRS):
cabbage, then the peer, right after each other, for three rounds. The ratio is the median of the rounds' ratios: on a shared
machine the load drifts from one minute to the next, and a pair measured a minute apart is
compared under nearly the same load.
"""
from __future__ import annotations

import statistics
import time
from typing import NamedTuple

from benchmarks import peer_runs
from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.servers import cursor_on
from benchmarks.supervised import Supervisor


class Configuration(NamedTuple):
    """Supervisor options; batch size 1 and synchronous commits are the supervisor's defaults."""

    workers: int
    batch_size: int = 1
    synchronous_commit: bool = True

    def params(self) -> dict[str, object]:
        return {"workers": self.workers, "batch_size": self.batch_size,
                "synchronous_commit": "on" if self.synchronous_commit else "off"}


BATCHED = Configuration(2, 10)
BATCHED_WITHOUT_WAITING = Configuration(2, 10, synchronous_commit=False)
CONFIGURATIONS = [Configuration(1), Configuration(2), Configuration(4), Configuration(8),
                  BATCHED, BATCHED_WITHOUT_WAITING]
QUICK_CONFIGURATIONS = [Configuration(1), Configuration(2), BATCHED, BATCHED_WITHOUT_WAITING]
DEFER_CHUNK = 20_000
# Each peer's target names a cabbage configuration and a job count: enough for a steady drain at
# the peer's speed, no more (procrastinate drains about 400 jobs/s here). oban and chancy have no
# target: each is paired with the cabbage configuration that keeps its own promise about a
# finished job. oban acknowledges jobs in batches and waits for each commit (batches of 10);
# chancy keeps outcomes in memory for up to a second before it writes them, so a crash loses
# them and the jobs run again (batches of 10, commits not waited for).
PAIRS = {"pgqueuer": (BATCHED_WITHOUT_WAITING, 10_000), "procrastinate": (Configuration(2), 5_000),
         "oban": (BATCHED, 20_000), "chancy": (BATCHED_WITHOUT_WAITING, 20_000)}


def run(context: RunContext) -> None:
    jobs = context.scale(20_000, 2_000)
    for configuration in context.scale(CONFIGURATIONS, QUICK_CONFIGURATIONS):
        rate, commits_per_job = drain_with_cabbage(context, configuration, jobs)
        params = {**configuration.params(), "jobs": jobs}
        context.figures.add("throughput", rate, "jobs/s", **params, clock="database: first started_at to last finished_at")
        context.figures.add("throughput_commits_per_job", round(commits_per_job, 2), "commits", **params)
    for peer in context.peers:
        compare_with_peer(context, peer, rounds=context.scale(3, 1))


def drain_with_cabbage(context: RunContext, configuration: Configuration, jobs: int) -> tuple[float, float]:
    """Jobs per second and commits per job of one supervisor draining ``jobs`` no-op jobs."""
    with context.server.fresh_database("throughput") as dsn:
        options = " ".join(f"{name}={value}" for name, value in configuration.params().items())
        context.say(f"throughput: {jobs} jobs, {options}")
        defer_jobs(dsn, jobs)
        commits_before = commits_of(dsn)
        with Supervisor(dsn, configuration.workers, batch_size=configuration.batch_size,
                        synchronous_commit=configuration.synchronous_commit) as supervisor:
            supervisor.wait_until_drained(jobs, timeout_s=600)
        time.sleep(0.3)  # the stopped backends' statistics reach pg_stat_database
        rate, done = drain_rate(dsn)
        return rate, (commits_of(dsn) - commits_before) / max(done, 1)


def compare_with_peer(context: RunContext, peer: str, rounds: int) -> None:
    """The peer's drain and its paired cabbage configuration, alternately; medians and the ratio."""
    configuration, jobs = PAIRS[peer]
    jobs = context.scale(jobs, 2_000)
    cabbage_rates, peer_records = [], []
    for _ in range(rounds):
        cabbage_rates.append(drain_with_cabbage(context, configuration, jobs)[0])
        with context.server.fresh_database(f"throughput_{peer}", cabbage_schema=False) as dsn:
            context.say(f"throughput: {jobs} jobs, {peer}")
            peer_records += [r for r in peer_runs.run(peer, "throughput", dsn, timeout_s=900, jobs=jobs)
                             if r["name"] == f"throughput_{peer}"]
    if len(peer_records) != rounds:
        context.say(f"throughput: {peer} gave {len(peer_records)} figures in {rounds} rounds; no ratio")
        return
    ratios = [mine / theirs["value"] for mine, theirs in zip(cabbage_rates, peer_records)]
    context.say(f"throughput: cabbage / {peer} by round: {', '.join(f'{ratio:.3f}' for ratio in ratios)}")
    pair = {"rounds": rounds, "jobs": jobs}
    context.figures.add(f"throughput_{peer}", statistics.median(r["value"] for r in peer_records), "jobs/s",
                        **{**peer_records[0]["params"], **pair})
    context.figures.add("throughput_paired", statistics.median(cabbage_rates), "jobs/s",
                        **configuration.params(), peer=peer, **pair)
    numerator = " ".join(f"{name}={value}" for name, value in configuration.params().items())
    context.figures.add(f"throughput_ratio_vs_{peer}", round(statistics.median(ratios), 3), "ratio",
                        numerator=f"throughput {numerator}",
                        denominator=f"throughput_{peer}", **pair, of="median of the rounds' ratios")


def defer_jobs(dsn: str, jobs: int, task_name: str = "noop") -> None:
    """``jobs`` jobs of a benchmark task without arguments (a no-op unless told otherwise)."""
    app = make_app(dsn)
    task = app.get_task(task_name)
    for start in range(0, jobs, DEFER_CHUNK):
        task.defer_many([[] for _ in range(min(DEFER_CHUNK, jobs - start))])
    app.store.close()


def drain_rate(dsn: str) -> tuple[float, int]:
    """Jobs per second between the first start and the last finish (database clock), and the count."""
    with cursor_on(dsn) as cursor:
        cursor.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))"
            "  FROM cabbage_jobs WHERE status = 'succeeded'"
        )
        done, seconds = cursor.fetchone()
    return round(done / float(seconds), 1), done


def commits_of(dsn: str) -> int:
    with cursor_on(dsn) as cursor:
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]
