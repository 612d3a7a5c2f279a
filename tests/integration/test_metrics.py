"""/metrics: Prometheus text that the client's own parser reads, with the database's numbers."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cabbage.jobs import Outcome, Status
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


def test_an_unreachable_database_is_database_up_0_not_an_error():
    metrics = scrape("host=127.0.0.1 port=1 connect_timeout=2 password=hunter2")
    assert metrics == {"cabbage_database_up": {(): 0.0}}
