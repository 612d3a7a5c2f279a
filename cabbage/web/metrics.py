"""/metrics in the Prometheus text format, read from the database at scrape time.

A custom collector, so the figures are the database's own at that moment, whichever process
serves them, through the request's pooled connection. When the database does not answer, only
``cabbage_database_up 0`` is exposed.

Jobs finished are a gauge over a recent window, not a counter: pruning deletes rows, and a
counter that goes down would read as a reset to Prometheus.
"""

from __future__ import annotations

import datetime
from typing import Callable, Iterator

import flask
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cabbage.admin import TODO_STATES, Admin, counts_by_queue, todo_counts_by_queue
from cabbage.exceptions import CabbageError
from cabbage.periodic import PeriodicOverview, tick_overdue_s
from cabbage.web.database import get_admin

blueprint = flask.Blueprint("metrics", __name__)
log = structlog.get_logger()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DatabaseCollector(Collector):
    """Reads job, worker, throughput and periodic schedule figures with ``Admin`` each time it is
    collected."""

    def __init__(self, get_admin: Callable[[], Admin], heartbeat_timeout_s: float, finished_window_s: float) -> None:
        self.get_admin = get_admin
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.finished_window_s = finished_window_s

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("cabbage_database_up", "1 when the database answered this scrape, else 0")
        try:
            figures = list(self.read_figures(self.get_admin()))
        except CabbageError as exc:
            log.warning("metrics_scrape_failed", error_type=type(exc).__name__, error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from figures

    def read_figures(self, admin: Admin) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("cabbage_jobs", "Jobs in the database, by queue and status", labels=["queue", "status"])
        by_queue = counts_by_queue(admin.count_jobs())
        for queue, numbers in by_queue.items():
            for status, jobs_in_status in numbers.items():  # zeros included, so a series never vanishes
                jobs.add_metric([queue, status.value], jobs_in_status)
        yield jobs

        todo = GaugeMetricFamily(
            "cabbage_jobs_todo",
            "Todo jobs by queue and state: waiting (due, claimable), scheduled (not due yet), behind_lock",
            labels=["queue", "state"],
        )
        todo_by_queue = todo_counts_by_queue(admin.count_todo_jobs())
        for queue in by_queue:
            for state in TODO_STATES:
                todo.add_metric([queue, state.value], todo_by_queue.get(queue, {}).get(state, 0))
        yield todo

        oldest = GaugeMetricFamily(
            "cabbage_oldest_todo_age_seconds",
            "How long the oldest waiting job of each queue (todo, due, at the head of its line) has waited "
            "(0: none waiting)",
            labels=["queue"],
        )
        waiting = {job.queue: job.waiting_s for job in admin.oldest_waiting_jobs()}
        for queue in by_queue:
            oldest.add_metric([queue], max(waiting.get(queue, 0.0), 0.0))
        yield oldest

        workers = admin.count_workers(self.heartbeat_timeout_s)
        yield GaugeMetricFamily(
            "cabbage_workers_alive",
            f"Workers whose heartbeat is younger than {self.heartbeat_timeout_s:g} s",
            value=workers.alive,
        )
        yield GaugeMetricFamily("cabbage_workers_registered", "Rows in cabbage_workers", value=workers.registered)

        finished = GaugeMetricFamily(
            "cabbage_jobs_finished_recently",
            f"Jobs finished in the last {self.finished_window_s:g} s, by task and outcome",
            labels=["task_name", "outcome"],
        )
        for recent in admin.count_recently_finished(self.finished_window_s):
            finished.add_metric([recent.task_name, recent.outcome.value], recent.jobs)
        yield finished
        yield GaugeMetricFamily(
            "cabbage_jobs_finished_window_seconds",
            "The window of cabbage_jobs_finished_recently",
            value=self.finished_window_s,
        )
        yield from periodic_figures(admin.list_periodic_schedules())


def periodic_figures(overview: PeriodicOverview) -> Iterator[Metric]:
    """Per declared schedule, on the database clock: how long ago its last tick was recorded,
    how long its next tick has been due unrecorded, and how long ago a supervisor declared it."""
    labels = ["task_name", "periodic_id"]
    last_tick_age = GaugeMetricFamily(
        "cabbage_periodic_last_tick_age_seconds",
        "Seconds since the schedule's last tick was recorded (deferred or skipped); absent before its first",
        labels=labels,
    )
    overdue = GaugeMetricFamily(
        "cabbage_periodic_tick_overdue_seconds",
        "Seconds the schedule's next tick has been due without being recorded (0: not due yet); "
        "a supervisor records one within a second",
        labels=labels,
    )
    declared_age = GaugeMetricFamily(
        "cabbage_periodic_declared_age_seconds",
        "Seconds since a supervisor last declared the schedule (every minute while one runs it)",
        labels=labels,
    )
    for declared in overview.schedules:
        key = [declared.task_name, declared.periodic_id]
        if declared.last_tick is not None:
            last_tick_age.add_metric(key, seconds_between(declared.last_tick.recorded_at, overview.now))
        overdue.add_metric(key, tick_overdue_s(declared, overview.now))
        if declared.last_declared_at is not None:
            declared_age.add_metric(key, seconds_between(declared.last_declared_at, overview.now))
    yield from (last_tick_age, overdue, declared_age)


def seconds_between(earlier: datetime.datetime, later: datetime.datetime) -> float:
    return max((later - earlier).total_seconds(), 0.0)


@blueprint.route("/metrics")
def metrics() -> flask.Response:
    config = flask.current_app.config
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        DatabaseCollector(get_admin, config["CABBAGE_HEARTBEAT_TIMEOUT_S"], config["CABBAGE_FINISHED_WINDOW_S"])
    )
    return flask.Response(generate_latest(registry), content_type=CONTENT_TYPE)
