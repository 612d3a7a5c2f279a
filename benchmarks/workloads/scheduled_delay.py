"""Scheduled delay: how late a job scheduled a few hundred ms ahead starts on an idle supervisor
(--workers 2, the default --poll-interval of 5 s).

The harness defers 300 no-op jobs, one every 50 to 150 ms, each scheduled 200 to 400 ms ahead
(``schedule_in``, counted from the database clock), so that several wait at once and a later
defer is often due sooner than an earlier one. The delay of each is its row's started_at minus
its scheduled_at, both on the database clock: when the claim began its attempt, against when it
was due. Figures: p50, p99 and the largest, in ms. A job started before it was due would be a
bug; their count is said if there is any.
"""
from __future__ import annotations

import random
import time

from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.peers import protocol
from benchmarks.servers import cursor_on
from benchmarks.supervised import Supervisor

WORKERS = 2
WARMUP = 10
LEAD_S = (0.2, 0.4)
GAP_S = (0.05, 0.15)

DELAYS_MS = """
SELECT extract(epoch FROM started_at - scheduled_at) * 1000
  FROM cabbage_jobs
 WHERE id = ANY (%(job_ids)s)
"""


def run(context: RunContext) -> None:
    samples = context.scale(300, 60)
    with context.server.fresh_database("scheduled_delay") as dsn:
        with Supervisor(dsn, WORKERS) as supervisor:
            supervisor.wait_for_workers()
            context.say(f"scheduled_delay: {samples} jobs, each scheduled 200-400 ms ahead, to an idle --workers {WORKERS}")
            job_ids = defer_scheduled_jobs(dsn, supervisor, samples)
            supervisor.wait_until_drained(WARMUP + samples, timeout_s=60)
        with cursor_on(dsn) as cursor:
            cursor.execute(DELAYS_MS, {"job_ids": job_ids})
            delays_ms = sorted(float(delay_ms) for (delay_ms,) in cursor.fetchall())
    early = sum(1 for delay_ms in delays_ms if delay_ms < 0)
    if early:
        context.say(f"scheduled_delay: {early} of {samples} jobs started before they were due")
    params = {
        "samples": samples, "workers": WORKERS, "lead_ms": "200-400", "gap_ms": "50-150",
        "clock": "database: started_at - scheduled_at",
    }  # fmt: skip
    for label, fraction in (("p50", 0.50), ("p99", 0.99)):
        context.figures.add(f"scheduled_delay_{label}", round(protocol.percentile(delays_ms, fraction), 3), "ms", **params)
    context.figures.add("scheduled_delay_max", round(delays_ms[-1], 3), "ms", **params)


def defer_scheduled_jobs(dsn: str, supervisor: Supervisor, samples: int) -> list[int]:
    """Defers the warm-up jobs (due now: they prove the workers listen), then the scheduled ones;
    returns the ids of the scheduled ones."""
    app = make_app(dsn)
    noop = app.get_task("noop")
    for _ in range(WARMUP):
        noop.defer()
    supervisor.wait_until_drained(WARMUP, timeout_s=60)
    job_ids = []
    for _ in range(samples):
        time.sleep(random.uniform(*GAP_S))
        job_ids.append(noop.configure(schedule_in={"seconds": random.uniform(*LEAD_S)}).defer())
    app.store.close()
    return job_ids
