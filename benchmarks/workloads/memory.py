"""Memory and idle CPU: the supervisor's processes at rest and after work.

RSS (VmRSS of /proc/<pid>/status) of the master and of each child, idle and after 10,000 jobs;
what a child holds beyond the imported app (the target: under 40 MB), which is its private
memory (Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup): the master imported the app
before forking, so the app's pages are shared until a child writes to them; and the idle
master's CPU over 10 s (utime + stime of /proc/<pid>/stat), as a share of one core.

A fresh child's VmRSS can be below that of a process that imported the app itself: after fork,
file-backed pages count in the child's RSS only once it touches them. The RSS of such a process
is reported too (memory_app_import_rss), for scale.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.context import RunContext
from benchmarks.supervised import (
    APP,
    REPOSITORY,
    Supervisor,
    cpu_seconds,
    private_mb,
    rss_mb,
)
from benchmarks.workloads.throughput import defer_jobs

WORKERS = 2
SETTLE_S = 2.0

# A process that imports the app and nothing else: what every child holds before cabbage works.
APP_BASELINE = """
import importlib
module, _, attribute = {app!r}.partition(":")
getattr(importlib.import_module(module), attribute)
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) / 1024)
"""


def run(context: RunContext) -> None:
    jobs = context.scale(10_000, 1_000)
    idle_s = context.scale(10.0, 3.0)
    context.figures.add("memory_app_import_rss", round(app_baseline_mb(), 1), "MB", app=APP)
    with context.server.fresh_database("memory") as dsn, Supervisor(dsn, WORKERS) as supervisor:
        supervisor.wait_for_workers()
        time.sleep(SETTLE_S)
        context.say(f"memory: idle master's CPU over {idle_s:.0f} s")
        before, started = cpu_seconds(supervisor.pid), time.monotonic()
        children_before = {pid: cpu_seconds(pid) for pid in supervisor.children()}
        time.sleep(idle_s)
        elapsed = time.monotonic() - started
        master_cpu = (cpu_seconds(supervisor.pid) - before) / elapsed * 100
        child_cpu = max((cpu_seconds(pid) - used) / elapsed * 100 for pid, used in children_before.items())
        context.figures.add("idle_master_cpu", round(master_cpu, 3), "% of a core", seconds=idle_s, workers=WORKERS)
        context.figures.add("idle_child_cpu_max", round(child_cpu, 3), "% of a core", seconds=idle_s, workers=WORKERS)
        add_rss(context, supervisor, state="idle", jobs=0)
        context.say(f"memory: {jobs} jobs")
        defer_jobs(dsn, jobs)
        supervisor.wait_until_drained(jobs, timeout_s=600)
        time.sleep(SETTLE_S)
        add_rss(context, supervisor, state="after jobs", jobs=jobs)


def add_rss(context: RunContext, supervisor: Supervisor, *, state: str, jobs: int) -> None:
    params = {"state": state, "jobs": jobs, "workers": WORKERS}
    context.figures.add("memory_master_rss", rss_mb(supervisor.pid), "MB", **params)
    children = supervisor.children()
    for number, pid in enumerate(children, start=1):
        context.figures.add("memory_child_rss", rss_mb(pid), "MB", **params, child=number)
    context.figures.add("memory_child_beyond_app", max(private_mb(pid) for pid in children), "MB", **params,
                        measure="largest child's Private_Clean + Private_Dirty (smaps_rollup)")


def app_baseline_mb() -> float:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "CABBAGE_DSN": "postgresql:///unused"}
    result = subprocess.run([sys.executable, "-c", APP_BASELINE.format(app=APP)],
                            env=environment, capture_output=True, text=True, check=True)
    return float(result.stdout)
