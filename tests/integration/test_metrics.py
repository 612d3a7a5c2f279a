"""/metrics: Prometheus text that the client's own parser reads, with the database's numbers."""

from __future__ import annotations

import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cabbage.jobs import NewJob, Outcome, Status
from cabbage.periodic import PeriodicSchedule, PeriodicTick
from cabbage.postgres import PostgresJobStore
from cabbage.web import create_app
from tests.integration.job_states import BOOM, age_finished_jobs, execute


def scrape(dsn: str, **options: Any) -> dict[str, dict[tuple, float]]:
    """/metrics of a fresh app, as {metric name: {sorted label pairs: value}}."""
    answer = create_app(dsn, **options).test_client().get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_match_the_database(jobs):
    for _ in range(3):
        jobs.todo(queue="mail")
    jobs.doing("tasks.slow")
    jobs.succeeded("tasks.a")
    jobs.succeeded("tasks.a")
    old = jobs.failed("tasks.a")
    jobs.finished(Outcome.failed(BOOM), "tasks.b")
    age_finished_jobs(jobs.dsn, [old], 3600)  # outside the five-minute window
    execute(jobs.dsn, "UPDATE cabbage_jobs SET scheduled_at = now() - interval '2 minutes' WHERE queue = 'mail'")
    stale = jobs.store.register_worker("gone-host", 1, None)
    execute(jobs.dsn, "UPDATE cabbage_workers SET last_heartbeat_at = now() - interval '5 minutes' WHERE id = %s", (stale,))

    metrics = scrape(jobs.dsn, heartbeat_timeout_s=30, finished_window_s=300)

    assert metrics["cabbage_database_up"] == {(): 1.0}
    in_database = {
        (("queue", queue), ("status", status)): float(count)
        for queue, status, count in execute(jobs.dsn, "SELECT queue, status::text, count(*) FROM cabbage_jobs GROUP BY 1, 2")
    }
    reported = {labels: value for labels, value in metrics["cabbage_jobs"].items() if value}
    assert reported == in_database
    assert metrics["cabbage_jobs"][(("queue", "mail"), ("status", "failed"))] == 0.0  # zeros stay as series
    assert len(metrics["cabbage_jobs"]) == len({queue for (_, queue), _ in in_database}) * len(Status)

    ((oldest_s,),) = execute(jobs.dsn, "SELECT extract(epoch FROM now() - min(scheduled_at)) FROM cabbage_jobs WHERE queue = 'mail'")
    assert abs(metrics["cabbage_oldest_todo_age_seconds"][(("queue", "mail"),)] - float(oldest_s)) < 5
    assert metrics["cabbage_oldest_todo_age_seconds"][(("queue", "busy"),)] == 0.0  # its only job is doing

    todo = {labels: value for labels, value in metrics["cabbage_jobs_todo"].items() if value}
    assert todo == {(("queue", "mail"), ("state", "waiting")): 3.0}
    assert metrics["cabbage_jobs_todo"][(("queue", "busy"), ("state", "behind_lock"))] == 0.0

    assert metrics["cabbage_workers_alive"] == {(): 1.0}
    assert metrics["cabbage_workers_registered"] == {(): 2.0}
    assert metrics["cabbage_jobs_finished_recently"] == {
        (("outcome", "succeeded"), ("task_name", "tasks.a")): 2.0,
        (("outcome", "failed"), ("task_name", "tasks.b")): 1.0,
    }
    assert metrics["cabbage_jobs_finished_window_seconds"] == {(): 300.0}


def test_metrics_of_an_empty_database(db_dsn):
    metrics = scrape(db_dsn)
    assert metrics["cabbage_database_up"] == {(): 1.0}
    assert metrics["cabbage_workers_alive"] == {(): 0.0}
    assert "cabbage_jobs" not in metrics or metrics["cabbage_jobs"] == {}
    assert not [name for name, samples in metrics.items() if name.startswith("cabbage_periodic") and samples]


EVERY_MINUTE = PeriodicSchedule("tasks.sync", "* * * * *")
NIGHTLY = PeriodicSchedule("tasks.report", "0 3 * * *", periodic_id="nightly")


def test_metrics_tell_each_schedules_last_tick_age_overdue_tick_and_declaration_age(store: PostgresJobStore):
    store.declare_periodic_schedules([EVERY_MINUTE, NIGHTLY])
    execute(store.dsn, "UPDATE cabbage_periodic_schedules SET first_declared_at = now() - interval '2 days',"
                       " last_declared_at = now() - interval '5 minutes'")  # fmt: skip
    now = store.list_periodic_schedules().now
    # The every-minute schedule last ticked ten minutes ago; no supervisor recorded a tick since.
    last_tick_at = now.replace(second=0, microsecond=0) - datetime.timedelta(minutes=10)
    job = NewJob("default", EVERY_MINUTE.task_name, scheduled_at=last_tick_at)
    store.record_periodic_ticks([PeriodicTick(*EVERY_MINUTE.key, last_tick_at, job)])
    execute(store.dsn, "UPDATE cabbage_periodic_ticks SET recorded_at = now() - interval '90 seconds'")

    metrics = scrape(store.dsn)
    scraped_now = store.list_periodic_schedules().now
    sync, report = (("periodic_id", ""), ("task_name", "tasks.sync")), (("periodic_id", "nightly"), ("task_name", "tasks.report"))
    assert metrics["cabbage_periodic_last_tick_age_seconds"].keys() == {sync}  # the nightly one never ticked
    assert 90 <= metrics["cabbage_periodic_last_tick_age_seconds"][sync] < 90 + 5
    overdue = metrics["cabbage_periodic_tick_overdue_seconds"]
    next_sync_tick = last_tick_at + datetime.timedelta(minutes=1)
    assert_within_seconds(overdue[sync], (scraped_now - next_sync_tick).total_seconds())
    # Never ticked: its first 03:00 after it was first declared, two days ago, is overdue.
    first_report_tick = NIGHTLY.next_tick_after(now - datetime.timedelta(days=2))
    assert first_report_tick is not None
    assert_within_seconds(overdue[report], (scraped_now - first_report_tick).total_seconds())
    declared_age = metrics["cabbage_periodic_declared_age_seconds"]
    assert declared_age.keys() == {sync, report} and all(300 <= age < 300 + 5 for age in declared_age.values())


def test_a_schedule_declared_before_its_first_tick_is_not_overdue(store: PostgresJobStore):
    store.declare_periodic_schedules([NIGHTLY])
    assert scrape(store.dsn)["cabbage_periodic_tick_overdue_seconds"] == {
        (("periodic_id", "nightly"), ("task_name", "tasks.report")): 0.0  # declared just now: its first tick is ahead
    }


def assert_within_seconds(scraped: float, expected: float, tolerance_s: float = 5.0) -> None:
    """The scrape read the database clock a moment before the test did."""
    assert expected - tolerance_s <= scraped <= expected, (scraped, expected)


def test_an_unreachable_database_is_database_up_0_not_an_error():
    metrics = scrape("host=127.0.0.1 port=1 connect_timeout=2 password=hunter2")
    assert metrics == {"cabbage_database_up": {(): 0.0}}
