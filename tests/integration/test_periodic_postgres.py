"""Periodic ticks on PostgreSQL: sessions racing for the same ticks defer each one once, without
deadlocks, and a tick row never exists without its job (or its skip, when a queueing lock
refused the job), nor a job without its tick."""

from __future__ import annotations

import collections
import datetime
import random
import threading
from contextlib import closing
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from cabbage.exceptions import StoreError
from cabbage.jobs import NewJob
from cabbage.periodic import PeriodicTick, RecordedTick, RefusedTick
from cabbage.postgres import PostgresJobStore

SESSIONS = 6
SCHEDULES = [("report", ""), ("report", "daily"), ("cleanup", "")]


def tick(task_name: str, periodic_id: str, tick_at: datetime.datetime, max_attempts: int | None = 1, **job_fields: Any) -> PeriodicTick:
    job = NewJob("default", task_name, kwargs={"timestamp": int(tick_at.timestamp())}, scheduled_at=tick_at,
                 max_attempts=max_attempts, **job_fields)  # fmt: skip
    return PeriodicTick(task_name, periodic_id, tick_at, job)


def database_now(store: PostgresJobStore) -> datetime.datetime:
    return store.list_periodic_schedules().now.replace(microsecond=0)


def race_for(db_dsn: str, ticks: list[PeriodicTick]) -> list[RecordedTick]:
    """What SESSIONS stores, each with the ticks in an order of its own, recorded at once."""
    stores = [PostgresJobStore(db_dsn) for _ in range(SESSIONS)]
    barrier = threading.Barrier(SESSIONS)
    recorded: list[list[RecordedTick]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def race(number: int) -> None:
        mine = random.Random(number).sample(ticks, len(ticks))  # each session in its own order
        try:
            barrier.wait(10)
            recorded[number] = stores[number].record_periodic_ticks(mine)
        except BaseException as exc:  # a deadlock would surface here
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(number,)) for number in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()
    assert not errors
    won = [tick for session in recorded for tick in session]
    assert sorted(t.tick_key for t in won) == sorted(t.tick_key for t in ticks)  # each once
    return won


def test_sessions_racing_for_the_same_ticks_defer_each_once(db_dsn: str, sql: psycopg2.extensions.connection) -> None:
    with closing(PostgresJobStore(db_dsn)) as store:
        now = database_now(store)
    ticks = [tick(task, periodic_id, now - datetime.timedelta(seconds=second)) for task, periodic_id in SCHEDULES for second in range(20)]
    race_for(db_dsn, ticks)
    with sql.cursor() as cursor:
        cursor.execute(
            "SELECT t.task_name, t.tick_at, j.task_name, (j.kwargs->>'timestamp')::bigint, j.scheduled_at"
            "  FROM cabbage_periodic_ticks t FULL JOIN cabbage_jobs j ON j.id = t.job_id"
        )
        rows = cursor.fetchall()
    assert len(rows) == len(ticks)  # one job per tick, no job without its tick
    for tick_task, tick_at, job_task, timestamp, scheduled_at in rows:
        assert (job_task, timestamp, scheduled_at) == (tick_task, int(tick_at.timestamp()), tick_at)


def test_sessions_racing_for_ticks_with_queueing_locks_defer_one_job_per_key_and_skip_the_rest(
    db_dsn: str, sql: psycopg2.extensions.connection
) -> None:
    with closing(PostgresJobStore(db_dsn)) as store:
        now = database_now(store)
    options = {("report", ""): {"queueing_lock": "report", "lock": "reports"}, ("report", "daily"): {"lock": "reports"},
               ("cleanup", ""): {"queueing_lock": "cleanup", "priority": 5}}  # fmt: skip
    ticks = [tick(*key, now - datetime.timedelta(seconds=second), **options[key]) for key in SCHEDULES for second in range(20)]
    won = race_for(db_dsn, ticks)
    refused = [t for t in won if isinstance(t, RefusedTick)]
    assert sorted({t.queueing_lock for t in refused}) == ["cleanup", "report"] and len(refused) == 2 * 19
    with sql.cursor() as cursor:
        cursor.execute(
            "SELECT t.task_name, t.periodic_id, t.skipped_ticks, j.queueing_lock, j.priority"
            "  FROM cabbage_periodic_ticks t FULL JOIN cabbage_jobs j ON j.id = t.job_id"
        )
        rows = cursor.fetchall()
    assert len(rows) == len(ticks)  # every tick row has its job or its skip, no job without its tick
    kinds = collections.Counter((task, periodic_id, skipped, key, priority) for task, periodic_id, skipped, key, priority in rows)
    assert kinds == {
        ("report", "", None, "report", 0): 1, ("report", "", 1, None, None): 19,
        ("cleanup", "", None, "cleanup", 5): 1, ("cleanup", "", 1, None, None): 19,
        ("report", "daily", None, None, 0): 20,
    }  # fmt: skip


def test_a_batch_the_database_refuses_records_neither_ticks_nor_jobs(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    now = database_now(store)
    good, bad = tick("report", "", now - datetime.timedelta(seconds=2)), tick("cleanup", "", now, max_attempts=0)
    with pytest.raises(StoreError, match="cabbage_jobs_max_attempts_positive"):
        store.record_periodic_ticks([good, bad])
    with sql.cursor() as cursor:
        cursor.execute("SELECT (SELECT count(*) FROM cabbage_periodic_ticks), (SELECT count(*) FROM cabbage_jobs)")
        assert cursor.fetchone() == (0, 0)
    assert len(store.record_periodic_ticks([good])) == 1


def test_a_ticks_job_wakes_idle_workers_of_its_queue(db_dsn: str) -> None:
    with closing(PostgresJobStore(db_dsn)) as listener, closing(PostgresJobStore(db_dsn)) as recorder:
        assert not listener.wait_for_jobs(["default"], 0.01)  # subscribed from here on
        recorder.record_periodic_ticks([tick("report", "", database_now(recorder))])
        assert listener.wait_for_jobs(["default"], 5)
