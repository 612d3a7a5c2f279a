"""Throughput: jobs deferred up front, then cabbage-supervisor drains them.

Jobs per second from the first job's started_at to the last job's finished_at, on the
database clock, for --workers 1, 2, 4, 8, --workers 2 --batch-size 10, that batch again with
--synchronous-commit off, --workers 2 --concurrency 50 with and without waited commits, and
with --prefetch 50 (def and async def no-ops; the async one also with --log-level warning, no
line per job); with the commits per job (pg_stat_database) that explain most of it.

With --compare, each peer drains the same number of no-op jobs in its best configuration of the
reference table, paired with a cabbage configuration (see PAIRS):
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
    concurrency: int = 1
    task: str = "noop"  # or "noop_async": the no-op as an async def task, on the child's event loop
    prefetch: int = 0
    log_level: str = "info"  # the supervisor's default: two lines per job (job_started, job_succeeded)

    def params(self) -> dict[str, object]:
        params: dict[str, object] = {"workers": self.workers, "batch_size": self.batch_size,
                                     "synchronous_commit": "on" if self.synchronous_commit else "off"}
        if self.concurrency > 1:
            params["concurrency"] = self.concurrency  # figures of one-at-a-time runs keep their names
        if self.task != "noop":
            params["task"] = self.task
        if self.prefetch:
            params["prefetch"] = self.prefetch
        if self.log_level != "info":
            params["log_level"] = self.log_level
        return params


BATCHED = Configuration(2, 10)
BATCHED_WITHOUT_WAITING = Configuration(2, 10, synchronous_commit=False)
# Several jobs at once per child: claims start all they take, finishes are recorded together.
CONCURRENT = Configuration(2, concurrency=50)
CONCURRENT_WITHOUT_WAITING = Configuration(2, synchronous_commit=False, concurrency=50)
# The same with the no-op an async def task: what pgqueuer, oban and chancy drain (all three run
# async functions; pgqueuer refuses a def entrypoint).
CONCURRENT_ASYNC = Configuration(2, concurrency=50, task="noop_async")
# And with 50 more jobs started in each child, which take the slots freed while the outcomes of
# the jobs before are on their way to the database.
CONCURRENT_PREFETCH = Configuration(2, concurrency=50, prefetch=50)
CONCURRENT_ASYNC_PREFETCH = Configuration(2, concurrency=50, task="noop_async", prefetch=50)
# And without a log line per job (--log-level warning keeps the failures'): the peers print none.
# The best configuration, paired with pgqueuer, oban and chancy.
CONCURRENT_ASYNC_PREFETCH_QUIET = CONCURRENT_ASYNC_PREFETCH._replace(log_level="warning")
# One job at a time per process, as by default, with 50 started jobs held: the outcomes are
# recorded on a thread of their own while the next jobs run, several in one commit.
ONE_AT_A_TIME_PREFETCH = Configuration(2, prefetch=50)
CONFIGURATIONS = [Configuration(1), Configuration(2), Configuration(4), Configuration(8),
                  BATCHED, BATCHED_WITHOUT_WAITING, ONE_AT_A_TIME_PREFETCH, CONCURRENT, CONCURRENT_WITHOUT_WAITING,
                  CONCURRENT_ASYNC, CONCURRENT_PREFETCH, CONCURRENT_ASYNC_PREFETCH, CONCURRENT_ASYNC_PREFETCH_QUIET]
QUICK_CONFIGURATIONS = [Configuration(1), Configuration(2), BATCHED, BATCHED_WITHOUT_WAITING, ONE_AT_A_TIME_PREFETCH,
                        CONCURRENT, CONCURRENT_ASYNC, CONCURRENT_ASYNC_PREFETCH, CONCURRENT_ASYNC_PREFETCH_QUIET]
DEFER_CHUNK = 20_000
# Each peer is paired with cabbage configurations and a job count: enough for a steady drain at
# the peer's speed, no more (procrastinate drains about 400 jobs/s here). pgqueuer, oban and
# chancy run many async jobs at once per process, acknowledge them in batches and print no line
# per job: each is paired with cabbage's --workers 2 --concurrency 50 --prefetch 50 --log-level
# warning draining the async no-op, every commit waited for (its outcomes recorded together, one
# commit per batch); procrastinate, one job at a time, with --workers 2 one at a time. pgqueuer
# is paired too with one job at a time per process and a line per job (--workers 2 --prefetch
# 50): the default execution model with every guarantee. The first configuration of each peer
# names its ratio throughput_ratio_vs_<peer>, the others throughput_<label>_ratio_vs_<peer>.
BEST = ""
PAIRS: dict[str, tuple[list[tuple[str, Configuration]], int]] = {
    "pgqueuer": ([(BEST, CONCURRENT_ASYNC_PREFETCH_QUIET), ("one_at_a_time", ONE_AT_A_TIME_PREFETCH)], 20_000),
    "procrastinate": ([(BEST, Configuration(2))], 5_000),
    "oban": ([(BEST, CONCURRENT_ASYNC_PREFETCH_QUIET)], 20_000),
    "chancy": ([(BEST, CONCURRENT_ASYNC_PREFETCH_QUIET)], 20_000),
}


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
        defer_jobs(dsn, jobs, configuration.task)
        commits_before = commits_of(dsn)
        with Supervisor(dsn, configuration.workers, batch_size=configuration.batch_size,
                        concurrency=configuration.concurrency, prefetch=configuration.prefetch,
                        synchronous_commit=configuration.synchronous_commit,
                        log_level=configuration.log_level) as supervisor:
            supervisor.wait_until_drained(jobs, timeout_s=600)
        time.sleep(0.3)  # the stopped backends' statistics reach pg_stat_database
        rate, done = drain_rate(dsn)
        return rate, (commits_of(dsn) - commits_before) / max(done, 1)


def compare_with_peer(context: RunContext, peer: str, rounds: int) -> None:
    """The peer's drain and its paired cabbage configurations, alternately; medians and ratios."""
    pairings, jobs = PAIRS[peer]
    jobs = context.scale(jobs, 2_000)
    cabbage_rates: dict[str, list[float]] = {label: [] for label, _ in pairings}
    peer_records = []
    for _ in range(rounds):
        for label, configuration in pairings:
            cabbage_rates[label].append(drain_with_cabbage(context, configuration, jobs)[0])
        with context.server.fresh_database(f"throughput_{peer}", cabbage_schema=False) as dsn:
            context.say(f"throughput: {jobs} jobs, {peer}")
            peer_records += [r for r in peer_runs.run(peer, "throughput", dsn, timeout_s=900, jobs=jobs)
                             if r["name"] == f"throughput_{peer}"]
    if len(peer_records) != rounds:
        context.say(f"throughput: {peer} gave {len(peer_records)} figures in {rounds} rounds; no ratio")
        return
    pair = {"rounds": rounds, "jobs": jobs}
    context.figures.add(f"throughput_{peer}", statistics.median(r["value"] for r in peer_records), "jobs/s",
                        **{**peer_records[0]["params"], **pair})
    for label, configuration in pairings:
        rates = cabbage_rates[label]
        ratios = [mine / theirs["value"] for mine, theirs in zip(rates, peer_records)]
        numerator = " ".join(f"{name}={value}" for name, value in configuration.params().items())
        context.say(f"throughput: cabbage {numerator} / {peer} by round: {', '.join(f'{ratio:.3f}' for ratio in ratios)}")
        context.figures.add("throughput_paired", statistics.median(rates), "jobs/s",
                            **configuration.params(), peer=peer, **pair)
        name = f"throughput_{label}_ratio_vs_{peer}" if label else f"throughput_ratio_vs_{peer}"
        context.figures.add(name, round(statistics.median(ratios), 3), "ratio", numerator=f"throughput {numerator}",
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
