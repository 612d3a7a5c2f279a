"""The command: options, the workloads in order, the ratios, the record and the summary.

    python -m benchmarks [--quick] [--only NAME,...] [--compare procrastinate,pgqueuer,oban,chancy] [--dsn DSN]

Exit status 0 whatever the timings; 1 only when a workload could not run at all (it crashed),
2 for bad options.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence

from benchmarks import peer_runs
from benchmarks.context import RunContext
from benchmarks.figures import Figures
from benchmarks.ratios import add_ratios, print_summary
from benchmarks.servers import Server
from benchmarks.workloads import (
    abort_latency, async_defer, claim, defer, failover, io_bound, latency, limit, locks, memory, scheduled_delay,
    throughput,
)
from cabbage import logconfig

WORKLOADS: dict[str, Callable[[RunContext], None]] = {
    "throughput": throughput.run,
    "claim": claim.run,
    "latency": latency.run,
    "scheduled_delay": scheduled_delay.run,
    "defer": defer.run,
    "locks": locks.run,
    "memory": memory.run,
    "limit": limit.run,
    "io_bound": io_bound.run,
    "failover": failover.run,
    "async_defer": async_defer.run,
    "abort_latency": abort_latency.run,
}


def parse_options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 3 minutes)")
    parser.add_argument("--only", type=_names(WORKLOADS), default=list(WORKLOADS),
                        help=f"comma-separated workloads among {','.join(WORKLOADS)}")
    parser.add_argument("--compare", type=_names(peer_runs.PEERS), default=[],
                        help=f"comma-separated peers to run the same workloads among {','.join(peer_runs.PEERS)}")
    parser.add_argument("--dsn", help="server to create the databases on (default: CABBAGE_DSN, "
                        "else 127.0.0.1:5432 user postgres, else a private durable cluster)")
    parser.add_argument("--private", action="store_true",
                        help="use a private durable cluster even when a server is configured or local")
    parser.add_argument("--no-record", action="store_true",
                        help="do not write this run's figures to benchmarks/results/latest.jsonl")
    return parser.parse_args(argv)


def _names(known: Iterable[str]) -> Callable[[str], list[str]]:
    known = list(known)
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose among {', '.join(known)}")
        return names

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    # The harness defers through cabbage itself: its log lines go to stderr, stdout is for figures.
    logconfig.configure("console", "warning", stream=sys.stderr)
    # A peer that cannot be installed (no Python >= 3.12 for oban, say) is named and left out.
    peers = peer_runs.ensure_installed(options.compare) if options.compare else []
    server = Server.resolve(options.dsn, private=options.private)
    figures = Figures()
    context = RunContext(server=server, figures=figures, quick=options.quick, peers=peers)
    crashed = []
    try:
        describe_machine(context)
        for name in options.only:
            try:
                WORKLOADS[name](context)
            except Exception:  # one broken workload must not hide the others' figures
                crashed.append(name)
                context.say(f"{name}: crashed\n{traceback.format_exc()}")
        add_ratios(figures)
    finally:
        server.close()
    if not options.no_record:
        figures.save()
    print_summary(figures)
    context.say(f"done{'; crashed: ' + ', '.join(crashed) if crashed else ''}")
    return 1 if crashed else 0


def describe_machine(context: RunContext) -> None:
    settings = context.server.settings()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    context.say(
        f"{platform.node()}: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"load average {load}; PostgreSQL {settings.get('server_version')} on {context.server.description} "
        f"(synchronous_commit={settings.get('synchronous_commit')}, fsync={settings.get('fsync')}, "
        f"shared_buffers={settings.get('shared_buffers')})"
    )
    context.say(f"{'quick' if context.quick else 'full'} run, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
