"""Periodic tasks under real supervisors: two masters on one database defer each tick of an
every-second schedule once, on time; a tick missed while none ran is deferred when one comes
back within the catch-up, skipped and logged once beyond it; a tick its task's queueing lock
refuses is skipped and logged; a reload runs the new schedules."""
from __future__ import annotations

import datetime
import signal
import time
from contextlib import closing
from typing import Any, Callable

import psycopg2

from tests.acceptance.supervisor_process import SupervisorProcess
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]
OPTIONS = ("--workers", "1")

EVERY_SECOND = """
@task_manager.periodic(cron="* * * * * *", catch_up={catch_up})
@task_manager.task(name="tick")
def tick(timestamp):
    record("ticked", timestamp=timestamp)
"""


def ticks_in(dsn: str) -> list[dict[str, Any]]:
    """Every recorded tick with its job (if any), in tick order, times from the database."""
    with closing(psycopg2.connect(dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.periodic_id, t.tick_at, t.skipped_ticks, j.id, (j.kwargs->>'timestamp')::bigint,"
            "       j.status::text, j.created_at, j.started_at"
            "  FROM cabbage_periodic_ticks t LEFT JOIN cabbage_jobs j ON j.id = t.job_id ORDER BY t.periodic_id, t.tick_at"
        )
        names = ["periodic_id", "tick_at", "skipped_ticks", "job_id", "timestamp", "status", "created_at", "started_at"]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def count_jobs(dsn: str) -> int:
    with closing(psycopg2.connect(dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM cabbage_jobs")
        return cursor.fetchone()[0]


def deferred(dsn: str, periodic_id: str = "") -> list[dict[str, Any]]:
    return [row for row in ticks_in(dsn) if row["job_id"] is not None and row["periodic_id"] == periodic_id]


def assert_one_job_per_second(rows: list[dict[str, Any]]) -> None:
    seconds = [row["tick_at"] for row in rows]
    assert seconds == sorted(set(seconds))
    assert all(later - earlier == datetime.timedelta(seconds=1) for earlier, later in zip(seconds, seconds[1:])), seconds
    assert all(row["timestamp"] == int(row["tick_at"].timestamp()) for row in rows)


def stop(supervisor: SupervisorProcess) -> None:
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit(15) == 0


def test_two_supervisors_defer_and_run_each_tick_once_on_time(start_supervisor: Start, db_dsn: str) -> None:
    first = start_supervisor(EVERY_SECOND.format(catch_up=60), *OPTIONS)
    second = start_supervisor(None, *OPTIONS)
    first.wait_for_children(1)
    second.wait_for_children(1)
    wait_for(lambda: len([row for row in deferred(db_dsn) if row["status"] == "succeeded"]) >= 6, 15,
             "six ticks run", context=first.last_log_lines)  # fmt: skip
    stop(first)
    stop(second)

    rows = deferred(db_dsn)
    assert_one_job_per_second(rows)
    assert count_jobs(db_dsn) == len(rows)  # no job without its tick
    for row in rows:  # on the database clock: created within a second of the tick, started soon after
        assert datetime.timedelta(0) <= row["created_at"] - row["tick_at"] < datetime.timedelta(seconds=1), row
        if row["started_at"] is not None:
            assert row["started_at"] - row["tick_at"] < datetime.timedelta(seconds=2), row
    ran = [event["timestamp"] for event in first.task_events("ticked")]
    assert sorted(ran) == sorted(set(ran))  # each tick ran once
    assert set(ran) <= {row["timestamp"] for row in rows} and len(ran) >= 6
    logged = [line["job_id"] for supervisor in (first, second) for line in supervisor.events("periodic_tick_deferred")]
    assert sorted(logged) == sorted(row["job_id"] for row in rows)  # each logged once, by the master that deferred it
    assert first.events("periodic_schedules_declared") and second.events("periodic_schedules_declared")


def test_a_tick_missed_while_none_ran_is_deferred_once_within_the_catch_up(start_supervisor: Start, db_dsn: str) -> None:
    supervisor = start_supervisor(EVERY_SECOND.format(catch_up=60), *OPTIONS)
    wait_for(lambda: len(deferred(db_dsn)) >= 2, 10, "two ticks deferred", context=supervisor.last_log_lines)
    stop(supervisor)
    stopped_at = deferred(db_dsn)[-1]["tick_at"]
    time.sleep(3)  # ticks go by with no supervisor: the outage under test, not a wait for a result
    back = start_supervisor(None, *OPTIONS)
    wait_for(lambda: deferred(db_dsn)[-1]["tick_at"] >= stopped_at + datetime.timedelta(seconds=5), 10,
             "the missed ticks and a new one", context=back.last_log_lines)  # fmt: skip
    rows = deferred(db_dsn)
    assert_one_job_per_second(rows)  # the missed seconds too, each once
    # Deferred late, on its return: three seconds of sleep lay between the stop and the return,
    # so the first two missed ticks were at least two seconds and one second old by then.
    late_s = {line["tick_at"]: line["late_s"] for line in back.events("periodic_tick_deferred")}
    first_missed, second_missed = (stopped_at + datetime.timedelta(seconds=s) for s in (1, 2))
    assert late_s[first_missed.isoformat()] >= 2.0 and late_s[second_missed.isoformat()] >= 1.0, late_s
    assert not back.events("periodic_ticks_skipped")


def test_a_tick_missed_beyond_the_catch_up_is_skipped_and_logged_once(start_supervisor: Start, db_dsn: str) -> None:
    supervisor = start_supervisor(EVERY_SECOND.format(catch_up=2), *OPTIONS)
    wait_for(lambda: len(deferred(db_dsn)) >= 2, 10, "two ticks deferred", context=supervisor.last_log_lines)
    stop(supervisor)
    stopped_at = deferred(db_dsn)[-1]["tick_at"]
    time.sleep(6)  # longer than the 2 s catch-up
    back = start_supervisor(None, *OPTIONS)
    other = start_supervisor(None, *OPTIONS)
    wait_for(lambda: back.events("periodic_ticks_skipped") or other.events("periodic_ticks_skipped"), 10,
             "the skipped ticks logged", context=back.last_log_lines)  # fmt: skip
    wait_for(lambda: deferred(db_dsn)[-1]["tick_at"] > stopped_at + datetime.timedelta(seconds=8), 10, "new ticks")
    lines = back.events("periodic_ticks_skipped") + other.events("periodic_ticks_skipped")
    assert len(lines) == 1  # once, by one of the two
    skipped = lines[0]
    (marker,) = [row for row in ticks_in(db_dsn) if row["skipped_ticks"] is not None]
    assert marker["job_id"] is None and marker["skipped_ticks"] == skipped["skipped_ticks"] >= 2
    first_skipped = datetime.datetime.fromisoformat(skipped["first_skipped_at"])
    assert first_skipped == stopped_at + datetime.timedelta(seconds=1)
    assert datetime.datetime.fromisoformat(skipped["last_skipped_at"]) == marker["tick_at"]
    rows = deferred(db_dsn)
    assert not [row for row in rows if first_skipped <= row["tick_at"] <= marker["tick_at"]]  # no job for them
    after = [row for row in rows if row["tick_at"] > marker["tick_at"]]
    assert after[0]["tick_at"] == marker["tick_at"] + datetime.timedelta(seconds=1)
    assert_one_job_per_second(after)


def test_ticks_while_the_queueing_locks_job_waits_are_skipped_and_logged(start_supervisor: Start, db_dsn: str) -> None:
    # No worker takes the "sync" queue: the first tick's job waits, and holds the key.
    supervisor = start_supervisor(
        """
        @task_manager.periodic(cron="* * * * * *")
        @task_manager.task(name="sync", queue="sync", queueing_lock="sync", priority=3)
        def sync():
            record("synced")
        """,
        *OPTIONS, "--queues", "elsewhere",
    )  # fmt: skip
    wait_for(lambda: len(supervisor.events("periodic_tick_skipped")) >= 3, 10, "three ticks skipped",
             context=supervisor.last_log_lines)  # fmt: skip
    stop(supervisor)
    (job,) = deferred(db_dsn)
    assert count_jobs(db_dsn) == 1
    skipped = supervisor.events("periodic_tick_skipped")
    assert {(line["queueing_lock"], line["waiting_job_id"], line["level"]) for line in skipped} == {("sync", job["job_id"], "info")}
    rows = ticks_in(db_dsn)
    refused = [row for row in rows if row["job_id"] is None]
    assert {row["skipped_ticks"] for row in refused} == {1} and len(refused) >= len(skipped)
    assert [row["tick_at"].isoformat() for row in refused][: len(skipped)] == [line["tick_at"] for line in skipped]
    with closing(psycopg2.connect(db_dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute("SELECT priority, queueing_lock, status::text FROM cabbage_jobs")
        assert cursor.fetchall() == [(3, "sync", "todo")]


def test_a_reload_runs_the_changed_schedules(start_supervisor: Start, write_tasks: Callable[[str], Any], db_dsn: str) -> None:
    supervisor = start_supervisor(EVERY_SECOND.format(catch_up=60), *OPTIONS)
    supervisor.wait_for_event("periodic_schedules_declared")
    write_tasks(
        """
        @task_manager.periodic(cron="* * * * * *", periodic_id="fast")
        @task_manager.task(name="tick")
        def tick():
            record("ticked_again")
        """
    )
    supervisor.send(signal.SIGHUP)
    wait_for(lambda: len(supervisor.events("periodic_schedules_declared")) == 2, 10, "the new schedules declared",
             context=supervisor.last_log_lines)  # fmt: skip
    assert [schedule["periodic_id"] for schedule in supervisor.events("periodic_schedules_declared")[1]["schedules"]] == ["fast"]
    wait_for(lambda: deferred(db_dsn, "fast"), 10, "a tick of the new schedule", context=supervisor.last_log_lines)
    supervisor.wait_for_task_event("ticked_again", timeout_s=10)
    fast = deferred(db_dsn, "fast")[0]
    assert fast["timestamp"] is None  # the new function takes no timestamp
