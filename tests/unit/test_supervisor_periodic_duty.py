"""The master's periodic duty on the in-memory store and a ManualClock: each tick deferred once
by however many masters, missed ticks caught up or skipped and logged once, reloads picked up."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
import structlog

import cabbage
from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import Status
from cabbage.testing import InMemoryJobStore, ManualClock
from supervisor.config import SupervisorConfig
from supervisor.database_duties import DatabaseDuties
from supervisor.periodic_duty import PeriodicDuty
from tests.waiting import wait_for

START = datetime.datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=datetime.timezone.utc)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def memory(clock: ManualClock) -> InMemoryJobStore:
    return InMemoryJobStore(clock=clock)


def app_on(
    memory: InMemoryJobStore, cron: str = "*/5 * * * *", queueing_lock: str | None = None, **options: Any
) -> cabbage.TaskManager:
    task_manager = cabbage.TaskManager(store_class=lambda: memory)  # type: ignore[arg-type,return-value]

    @task_manager.periodic(cron=cron, **options)
    @task_manager.task(name="report", queue="reports", queueing_lock=queueing_lock)
    def report(timestamp: int) -> None: ...

    return task_manager


def tick_jobs(memory: InMemoryJobStore) -> list[int]:
    """The timestamps the deferred jobs carry, in creation order."""
    return [job.kwargs["timestamp"] for job in memory.jobs]


def epoch(moment: datetime.datetime) -> int:
    return int(moment.timestamp())


def minutes_after_start(minutes: float) -> datetime.datetime:
    return START.replace(microsecond=0) + datetime.timedelta(minutes=minutes)


def test_a_schedule_starts_at_its_first_declaration_and_each_tick_is_deferred_once(
    memory: InMemoryJobStore, clock: ManualClock
) -> None:
    app, duty = app_on(memory), PeriodicDuty(memory)
    duty.run(app)
    assert memory.jobs == ()  # 12:00:00 was before the schedule was declared
    clock.advance(5 * 60)
    duty.run(app)
    duty.run(app)
    assert tick_jobs(memory) == [epoch(minutes_after_start(5))]
    (job,) = memory.jobs
    assert (job.task_name, job.queue, job.status, job.scheduled_at) == ("report", "reports", Status.TODO, minutes_after_start(5))


def test_two_masters_defer_each_tick_once(memory: InMemoryJobStore, clock: ManualClock) -> None:
    first, second = PeriodicDuty(memory), PeriodicDuty(memory)
    first_app, second_app = app_on(memory), app_on(memory)  # two hosts import the same app
    for _ in range(4):
        first.run(first_app)
        second.run(second_app)
        clock.advance(5 * 60)
    assert tick_jobs(memory) == [epoch(minutes_after_start(minutes)) for minutes in (5, 10, 15)]


def test_the_next_run_is_the_next_tick_on_the_monotonic_clock(memory: InMemoryJobStore, clock: ManualClock) -> None:
    app, duty = app_on(memory, cron="* * * * * *"), PeriodicDuty(memory)
    before = time.monotonic()
    duty.run(app)
    assert before + 0.4 <= duty.next_run_at <= time.monotonic() + 0.5  # 12:00:01 is 0.5 s after 12:00:00.5
    assert not duty.is_due(before, app)
    assert duty.is_due(duty.next_run_at, app)
    assert duty.is_due(before, app_on(memory, cron="* * * * * *"))  # a reloaded app: at once


def test_ticks_missed_within_the_catch_up_are_deferred_late(memory: InMemoryJobStore, clock: ManualClock) -> None:
    app, duty = app_on(memory, catch_up=900), PeriodicDuty(memory)
    duty.run(app)
    clock.advance(5 * 60)
    duty.run(app)
    clock.advance(14 * 60)  # no master ran at 12:10 nor 12:15
    with structlog.testing.capture_logs() as logs:
        duty.run(app)
    assert tick_jobs(memory) == [epoch(minutes_after_start(minutes)) for minutes in (5, 10, 15)]
    deferred = [line for line in logs if line["event"] == "periodic_tick_deferred"]
    assert [line["tick_at"] for line in deferred] == [minutes_after_start(m).isoformat() for m in (10, 15)]
    assert not [line for line in logs if line["event"] == "periodic_ticks_skipped"]


def test_ticks_missed_beyond_the_catch_up_are_skipped_and_logged_once(memory: InMemoryJobStore, clock: ManualClock) -> None:
    app, duty, other_host = app_on(memory, catch_up=600), PeriodicDuty(memory), PeriodicDuty(memory)
    duty.run(app)
    clock.advance(5 * 60)
    duty.run(app)
    clock.advance(60 * 60)  # 12:05 ran; nothing ran until 13:05
    with structlog.testing.capture_logs() as logs:
        duty.run(app)
        other_host.run(app_on(memory, catch_up=600))
        clock.advance(60)
        duty.run(app)
    skipped = [line for line in logs if line["event"] == "periodic_ticks_skipped"]
    assert len(skipped) == 1
    assert skipped[0] | {"log_level": "warning"} == {
        "event": "periodic_ticks_skipped",
        "log_level": "warning",
        "task_name": "report",
        "periodic_id": "",
        "skipped_ticks": 10,
        "counted_all": True,
        "first_skipped_at": minutes_after_start(10).isoformat(),
        "last_skipped_at": minutes_after_start(55).isoformat(),
        "catch_up_s": 600.0,
    }
    # 13:00 and 13:05 are within ten minutes of 13:05: deferred late, once.
    assert tick_jobs(memory) == [epoch(minutes_after_start(minutes)) for minutes in (5, 60, 65)]
    (report,) = memory.list_periodic_schedules().schedules
    assert report.last_tick is not None and report.last_tick.tick_at == minutes_after_start(65)


def test_a_tick_its_queueing_lock_refuses_is_skipped_and_logged_and_the_others_deferred(
    memory: InMemoryJobStore, clock: ManualClock
) -> None:
    app, duty = app_on(memory, queueing_lock="report"), PeriodicDuty(memory)

    @app.periodic(cron="*/5 * * * *")
    @app.task(name="cleanup", queue="reports")
    def cleanup() -> None: ...

    duty.run(app)
    clock.advance(5 * 60)
    duty.run(app)  # 12:05: both deferred
    (waiting,) = [job.id for job in memory.jobs if job.task_name == "report"]
    clock.advance(5 * 60)
    with structlog.testing.capture_logs() as logs:
        duty.run(app)  # 12:10: report's 12:05 job still waits
    assert [(line["event"], line["task_name"]) for line in logs if line["event"].startswith("periodic_tick")] == [
        ("periodic_tick_deferred", "cleanup"),
        ("periodic_tick_skipped", "report"),
    ]
    (skipped,) = [line for line in logs if line["event"] == "periodic_tick_skipped"]
    assert skipped == {
        "event": "periodic_tick_skipped",
        "log_level": "info",
        "task_name": "report",
        "periodic_id": "",
        "tick_at": minutes_after_start(10).isoformat(),
        "queueing_lock": "report",
        "waiting_job_id": waiting,
    }
    assert [job.task_name for job in memory.jobs] == ["cleanup", "report", "cleanup"]
    report = memory.list_periodic_schedules().by_key()[("report", "")]
    assert report.last_tick is not None
    assert (report.last_tick.tick_at, report.last_tick.job_id, report.last_tick.skipped_ticks) == (minutes_after_start(10), None, 1)

    worker_id = memory.register_worker("test-host", 1, None)
    assert waiting in [job.id for job in memory.claim_jobs(worker_id, ["reports"], limit=10)]  # the key is free
    clock.advance(5 * 60)
    duty.run(app)  # 12:15: deferred again
    report_ticks = [job.kwargs["timestamp"] for job in memory.jobs if job.task_name == "report"]
    assert report_ticks == [epoch(minutes_after_start(5)), epoch(minutes_after_start(15))]


def test_a_reload_declares_and_runs_the_new_schedules(memory: InMemoryJobStore, clock: ManualClock) -> None:
    duty = PeriodicDuty(memory)
    duty.run(cabbage.TaskManager(store_class=lambda: memory))  # type: ignore[arg-type,return-value]
    assert duty.next_run_at == float("inf") and memory.list_periodic_schedules().schedules == []
    reloaded = app_on(memory, cron="0 * * * *", periodic_id="hourly")
    assert duty.is_due(time.monotonic(), reloaded)
    with structlog.testing.capture_logs() as logs:
        duty.run(reloaded)
    (declared,) = [line for line in logs if line["event"] == "periodic_schedules_declared"]
    assert declared["schedules"] == [
        {"task_name": "report", "periodic_id": "hourly", "cron": "0 * * * *", "timezone": "UTC", "catch_up_s": 600.0}
    ]
    assert [(schedule.task_name, schedule.periodic_id) for schedule in memory.list_periodic_schedules().schedules] == [
        ("report", "hourly")
    ]


class UnreachableStore(InMemoryJobStore):
    """A store whose database is down for the periodic duty's calls; counts them."""

    calls = 0

    def declare_periodic_schedules(self, schedules: Any) -> None:
        self.calls += 1
        raise DatabaseUnavailable("lost the connection to db: server closed the connection")


def test_during_an_outage_the_duty_backs_off_with_the_other_database_duties(clock: ManualClock) -> None:
    down = UnreachableStore(clock=clock)
    duties = DatabaseDuties(down, "host", SupervisorConfig(app="proj.tasks", workers=1))
    with structlog.testing.capture_logs() as logs:
        duties.start()
        duties.set_periodic_app(app_on(down))
        wait_for(lambda: duties.is_down, 5, "the outage noticed")
        time.sleep(1.2)  # the window in which a tight loop would have made thousands of calls
        duties.close()
    assert [line["event"] for line in logs if line["event"].startswith("database")] == ["database_unreachable"]
    assert 1 <= down.calls <= 3  # at 0, then after 0.5 s, then 1 s more: the outage's backoff
