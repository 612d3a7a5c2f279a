"""Retention on PostgreSQL: `cabbage jobs prune` deletes a million finished jobs in bounded
batches while a worker keeps claiming, and never waits on a row someone else holds. What both
stores do is in test_store_contract.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import make_dsn

from cabbage.jobs import Outcome, Status
from cabbage.retention import prune_in_batches
from tests.integration.job_states import JobStates, age_finished_jobs, execute

CABBAGE_SCRIPT = Path(sys.executable).parent / "cabbage"
FINISHED_JOBS = 1_000_000
BATCH_SIZE = 10_000
LIVE_JOBS = 50_000
LOOK_EVERY_S = 1.0
TASK_S = 0.005  # the worker's "task": leaves the two cores to the prune too, as real work would


def insert_old_finished_jobs(dsn: str, count: int) -> None:
    execute(
        dsn,
        "INSERT INTO cabbage_jobs (queue, task_name, status, attempts, created_at, started_at, finished_at)"
        " SELECT 'old', 'tasks.old', (ARRAY['succeeded', 'failed', 'cancelled']::cabbage_job_status[])[1 + n %% 3],"
        "        1, now() - interval '30 days', now() - interval '30 days', now() - interval '10 days'"
        "   FROM generate_series(1, %(count)s) AS n",
        {"count": count},
    )


def count_old_jobs(connection: psycopg2.extensions.connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM cabbage_jobs WHERE queue = 'old'")
        return cursor.fetchone()[0]


@pytest.mark.timeout(90)
def test_prune_a_million_finished_jobs_in_batches_while_a_worker_claims(db_dsn):
    insert_old_finished_jobs(db_dsn, FINISHED_JOBS)
    execute(db_dsn, "INSERT INTO cabbage_jobs (queue, task_name) SELECT 'live', 'tasks.live' FROM generate_series(1, %s)", (LIVE_JOBS,))
    execute(db_dsn, "ANALYZE cabbage_jobs")
    # A claim that had to wait for a lock the prune holds fails at once instead of waiting.
    jobs = JobStates.open(make_dsn(db_dsn, options="-c lock_timeout=50"))
    observer = psycopg2.connect(db_dsn)
    observer.autocommit = True
    # An operator holds one old row: SKIP LOCKED passes it by instead of waiting for it.
    holder = psycopg2.connect(db_dsn)
    with holder.cursor() as cursor:
        cursor.execute("SELECT id FROM cabbage_jobs WHERE queue = 'old' ORDER BY id LIMIT 1 FOR UPDATE")
        (held_id,) = cursor.fetchone()

    prune = subprocess.Popen(
        [str(CABBAGE_SCRIPT), "jobs", "prune", "--older-than", "7d", "--batch-size", str(BATCH_SIZE), "--json"],
        env={**os.environ, "CABBAGE_DSN": db_dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    claims_during_prune, counts_seen = 0, set()
    next_look = time.monotonic()
    try:
        while prune.poll() is None:
            started = time.monotonic()
            (job,) = jobs.store.claim_jobs(jobs.worker_id, ["live"])
            assert jobs.store.finish_job(job.id, jobs.worker_id, job.attempts, Outcome.succeeded())
            claims_during_prune += 1
            time.sleep(TASK_S)
            if started >= next_look:  # a count costs a scan: look now and then, not per claim
                counts_seen.add(count_old_jobs(observer))
                next_look = time.monotonic() + LOOK_EVERY_S
        out, err = prune.communicate(timeout=60)
    finally:
        if prune.poll() is None:
            prune.kill()
        holder.rollback()
        holder.close()

    assert prune.returncode == 0, err
    assert json.loads(out) == {"deleted": FINISHED_JOBS - 1}
    assert count_old_jobs(observer) == 1  # only the row the operator held
    assert jobs.store.get_job(held_id) is not None

    # Batches commit one by one: another session sees the count go down in steps of the batch.
    steps = {count for count in counts_seen if 0 < FINISHED_JOBS - count < FINISHED_JOBS - 1}
    assert len(steps) >= 3, f"the prune was not seen in progress: {sorted(counts_seen)}"
    assert all((FINISHED_JOBS - count) % BATCH_SIZE == 0 for count in steps), sorted(steps)

    # The worker was never held up: claims went on the whole time, none waited on a lock.
    assert claims_during_prune >= 100
    live = execute(db_dsn, "SELECT status::text, count(*) FROM cabbage_jobs WHERE queue = 'live' GROUP BY 1")
    assert dict(live) == {"succeeded": claims_during_prune, "todo": LIVE_JOBS - claims_during_prune}
    observer.close()
    jobs.close()


def test_prune_keeps_unfinished_and_recent_jobs(db_dsn):
    jobs = JobStates.open(db_dsn)
    old = [jobs.succeeded(), jobs.failed(), jobs.succeeded()]
    recent, waiting, running = jobs.succeeded(), jobs.todo(), jobs.doing()
    age_finished_jobs(db_dsn, old, 8 * 86400)
    execute(db_dsn, "UPDATE cabbage_jobs SET created_at = now() - interval '1 year' WHERE id IN %s", ((waiting, running),))

    assert prune_in_batches(jobs.store, older_than_s=7 * 86400, statuses=[Status.FAILED]) == 1
    assert prune_in_batches(jobs.store, older_than_s=7 * 86400, batch_size=1) == 2
    remaining = {row[0] for row in execute(db_dsn, "SELECT id FROM cabbage_jobs")}
    assert remaining == {recent, waiting, running}
    jobs.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"older_than_s": -1}, "older_than_s must be >= 0"),
        ({"older_than_s": 1, "statuses": [Status.TODO]}, "only finished jobs"),
        ({"older_than_s": 1, "batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_prune_refuses_bad_arguments(store, options, message):
    with pytest.raises(ValueError, match=message):
        prune_in_batches(store, **options)
