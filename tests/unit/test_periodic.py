"""Periodic schedules without a database: declaring them (and every bad one refused), their ticks
across DST changes, and which ticks are due (plan_ticks), with times passed in."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies

import cabbage
from cabbage import periodic, store
from cabbage.exceptions import ConfigurationError, PeriodicScheduleError
from cabbage.periodic import PeriodicSchedule, plan_ticks, tick_job

UTC = datetime.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
# Europe/Paris in 2026: 02:00 becomes 03:00 on March 29, 03:00 becomes 02:00 on October 25.
SPRING_FORWARD = datetime.datetime(2026, 3, 29, 0, 0, tzinfo=PARIS)
FALL_BACK = datetime.datetime(2026, 10, 25, 0, 0, tzinfo=PARIS)


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=store.load_store_from_path("cabbage.testing.InMemoryJobStore"))


def at(*fields: int, zone: datetime.tzinfo = UTC) -> datetime.datetime:
    return datetime.datetime(*fields, tzinfo=zone)  # type: ignore[misc]


def ticks(schedule: PeriodicSchedule, after: datetime.datetime, count: int) -> list[datetime.datetime]:
    found = schedule.ticks_after(after)
    return [next(found) for _ in range(count)]


def local(moments: list[datetime.datetime], zone: datetime.tzinfo = PARIS) -> list[str]:
    return [moment.astimezone(zone).isoformat() for moment in moments]


# -- declaring ----------------------------------------------------------------------------------


def test_periodic_stacks_above_task_and_registers_the_schedule(task_manager: cabbage.TaskManager) -> None:
    @task_manager.periodic(cron="*/5 * * * *", timezone="Europe/Paris", periodic_id="often", catch_up=60)
    @task_manager.task(name="clean")
    def clean(timestamp: int) -> None: ...

    assert isinstance(clean, cabbage.Task)  # the Task itself: defer() still works
    assert task_manager.periodic_schedules == {
        ("clean", "often"): PeriodicSchedule("clean", "*/5 * * * *", "Europe/Paris", "often", 60.0)
    }


def test_two_schedules_of_one_task_need_distinct_periodic_ids(task_manager: cabbage.TaskManager) -> None:
    @task_manager.periodic(cron="0 3 * * *", periodic_id="night")
    @task_manager.periodic(cron="0 12 * * *", periodic_id="noon")
    @task_manager.task(name="report")
    def report() -> None: ...

    assert set(task_manager.periodic_schedules) == {("report", "night"), ("report", "noon")}
    with pytest.raises(PeriodicScheduleError, match=r"already has a schedule with periodic_id 'noon' \('0 12 \* \* \*'\); pass periodic_id="):
        task_manager.periodic(cron="*/5 * * * *", periodic_id="noon")(report)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"cron": "*/5 * * *"}, r"cron '\*/5 \* \* \*' of @task_manager.periodic is invalid \(Wrong number of fields\); write"),
        ({"cron": "61 * * * *"}, r"is invalid \(Bad minute\)"),
        ({"cron": "0 0 30 2 *"}, r"is invalid \(Bad day-of-month\)"),
        ({"cron": "* * */20 * 1L"}, r"never fires \(no match within 50 years\)"),
        ({"cron": 5}, r"cron of @task_manager.periodic must be a string, got 5"),
        ({"cron": "* * * * *", "timezone": "Europe/Pari"}, r"unknown timezone 'Europe/Pari': use an IANA name"),
        ({"cron": "* * * * *", "timezone": "../etc/passwd"}, r"unknown timezone"),
        ({"cron": "* * * * *", "timezone": datetime.timezone.utc}, r"timezone of @task_manager.periodic must be an IANA name"),
        ({"cron": "* * * * *", "periodic_id": 3}, r"periodic_id of @task_manager.periodic must be a string"),
        ({"cron": "* * * * *", "catch_up": 0}, r"catch_up of @task_manager.periodic must be a number of seconds from 1 to 86400"),
        ({"cron": "* * * * *", "catch_up": 2 * 86400}, r"from 1 to 86400"),
        ({"cron": "* * * * *", "catch_up": float("nan")}, r"from 1 to 86400"),
        ({"cron": "* * * * *", "catch_up": True}, r"from 1 to 86400"),
    ],
    ids=["four-fields", "bad-minute", "february-30", "never", "not-a-string", "unknown-zone", "path-zone",
         "tzinfo-zone", "id-not-a-string", "no-catch-up", "catch-up-too-long", "catch-up-nan", "catch-up-bool"],
)  # fmt: skip
def test_a_bad_schedule_is_refused_at_declaration(
    task_manager: cabbage.TaskManager, options: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(PeriodicScheduleError, match=complaint) as refused:
        task_manager.periodic(**options)
    assert isinstance(refused.value, ConfigurationError) and isinstance(refused.value, ValueError)
    assert task_manager.periodic_schedules == {}


def test_periodic_below_task_or_on_another_managers_task_is_refused(task_manager: cabbage.TaskManager) -> None:
    with pytest.raises(PeriodicScheduleError, match=r"@periodic must go above @task_manager.task of this TaskManager"):

        @task_manager.task
        @task_manager.periodic(cron="* * * * *")
        def wrong_order() -> None: ...

    other = cabbage.TaskManager(store_class=store.load_store_from_path("cabbage.testing.InMemoryJobStore"))

    @other.task(name="elsewhere")
    def elsewhere() -> None: ...

    with pytest.raises(PeriodicScheduleError, match="of this TaskManager"):
        task_manager.periodic(cron="* * * * *")(elsewhere)


def test_a_task_that_needs_arguments_cannot_be_periodic(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task(name="write_alphabet")
    def write_alphabet(floor: str) -> None: ...

    with pytest.raises(PeriodicScheduleError, match=r"periodic task write_alphabet must take no argument but an optional keyword 'timestamp'.*got write_alphabet\(floor"):
        task_manager.periodic(cron="* * * * *")(write_alphabet)


@hypothesis.given(strategies.text(max_size=40))
def test_any_text_as_cron_is_either_a_schedule_or_a_clear_refusal(text: str) -> None:
    try:
        schedule = periodic.check_schedule("fuzzed", text)
    except PeriodicScheduleError as refused:
        assert "fuzzed" in str(refused)
    else:
        assert schedule.next_tick_after(at(2026, 1, 1)) is not None


# -- the tick's job ------------------------------------------------------------------------------


def test_a_ticks_job_is_the_job_a_defer_at_the_tick_would_store(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task(queue="reports", lock="report", retry=2, priority=7, queueing_lock="daily-report", name="report")
    def report(timestamp: int) -> None: ...

    tick_at = at(2026, 1, 1, 12, 5)
    job = tick_job(report, tick_at)
    assert job == report.configure(schedule_at=tick_at).new_job((), {"timestamp": 1767269100})
    assert (job.task_name, job.queue, job.lock, job.max_attempts) == ("report", "reports", "report", 3)
    assert (job.priority, job.queueing_lock, job.scheduled_at, job.schedule_in) == (7, "daily-report", tick_at, None)
    report.defer(timestamp=1767269100)
    (deferred,) = task_manager.store.jobs  # type: ignore[attr-defined]
    assert (deferred.priority, deferred.queueing_lock, deferred.lock, deferred.max_attempts) == (7, "daily-report", "report", 3)


def test_a_ticks_job_carries_the_timestamp_only_to_a_task_that_takes_it(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task(queue="reports", lock="report", retry=2, name="with_timestamp")
    def with_timestamp(timestamp: int) -> None: ...

    @task_manager.task(name="with_kwargs")
    def with_kwargs(**kwargs: Any) -> None: ...

    @task_manager.task(name="without")
    def without(verbose: bool = False) -> None: ...

    tick_at = at(2026, 1, 1, 12, 5)
    job = tick_job(with_timestamp, tick_at)
    assert (job.queue, job.lock, job.max_attempts, job.scheduled_at) == ("reports", "report", 3, tick_at)
    assert (job.args, job.kwargs) == ((), {"timestamp": 1767269100})
    assert tick_job(with_kwargs, tick_at).kwargs == {"timestamp": 1767269100}
    assert tick_job(without, tick_at).kwargs == {}


# -- how late a schedule is ----------------------------------------------------------------------


def declared(
    schedule: PeriodicSchedule, first_declared_at: datetime.datetime | None, last_tick_at: datetime.datetime | None = None
) -> periodic.DeclaredSchedule:
    last_tick = None if last_tick_at is None else periodic.RecordedTick(*schedule.key, last_tick_at, 1, None, last_tick_at)
    return periodic.DeclaredSchedule.of(schedule, first_declared_at, first_declared_at, last_tick, at(2026, 1, 1))


def test_a_tick_is_overdue_from_the_first_tick_after_the_last_recorded_one() -> None:
    every_minute = PeriodicSchedule("sync", "* * * * *")
    now = at(2026, 1, 1, 12, 10, 30)
    assert periodic.tick_overdue_s(declared(every_minute, at(2026, 1, 1), at(2026, 1, 1, 12, 10)), now) == 0.0
    assert periodic.tick_overdue_s(declared(every_minute, at(2026, 1, 1), at(2026, 1, 1, 12, 5)), now) == 270.0
    # Never ticked: from its first tick after it was first declared.
    assert periodic.tick_overdue_s(declared(every_minute, at(2026, 1, 1, 12, 0, 10)), now) == 570.0
    # Not declared by a supervisor (an app's own schedule): nothing is due for it.
    assert periodic.tick_overdue_s(declared(every_minute, None), now) == 0.0
    unreadable = PeriodicSchedule("sync", "99 * * * *")  # declared by another release
    assert periodic.tick_overdue_s(declared(unreadable, at(2026, 1, 1)), now) == 0.0


# -- ticks ---------------------------------------------------------------------------------------


def test_ticks_are_whole_seconds_in_utc_strictly_after_the_moment() -> None:
    every_second = PeriodicSchedule("t", "* * * * * *")
    assert ticks(every_second, at(2026, 1, 1, 12, 0, 0) + datetime.timedelta(microseconds=500), 2) == [
        at(2026, 1, 1, 12, 0, 1),
        at(2026, 1, 1, 12, 0, 2),
    ]
    assert ticks(PeriodicSchedule("t", "*/5 * * * *"), at(2026, 1, 1, 12, 5), 1) == [at(2026, 1, 1, 12, 10)]
    assert PeriodicSchedule("t", "0 9 * * *", "Europe/Paris").next_tick_after(at(2026, 1, 1)) == at(2026, 1, 1, 8)


def test_a_fixed_time_skipped_by_spring_forward_runs_once_right_after_the_change() -> None:
    for cron in ("30 2 * * *", "0 30 2 * * *"):
        schedule = PeriodicSchedule("t", cron, "Europe/Paris")
        assert local(ticks(schedule, SPRING_FORWARD, 2)) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    both = PeriodicSchedule("t", "0,30 2 * * *", "Europe/Paris")  # two wall times, one instant: once
    assert local(ticks(both, SPRING_FORWARD, 2)) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]


def test_a_fixed_time_repeated_by_fall_back_runs_once() -> None:
    for cron in ("30 2 * * *", "0 30 2 * * *"):
        schedule = PeriodicSchedule("t", cron, "Europe/Paris")
        assert local(ticks(schedule, FALL_BACK, 2)) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_a_start_inside_the_repeated_hour_does_not_run_its_first_pass_again() -> None:
    schedule = PeriodicSchedule("t", "45 2 * * *", "Europe/Paris")
    second_pass = datetime.datetime(2026, 10, 25, 2, 10, tzinfo=PARIS, fold=1)  # after the first 02:45
    assert local(ticks(schedule, second_pass, 1)) == ["2026-10-26T02:45:00+01:00"]


def test_a_schedule_along_the_clock_runs_every_real_interval_across_dst() -> None:
    half_hourly = PeriodicSchedule("t", "*/30 * * * *", "Europe/Paris")
    assert local(ticks(half_hourly, at(2026, 10, 25, 1, 50, zone=PARIS), 4)) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
    ]
    assert local(ticks(half_hourly, at(2026, 3, 29, 1, 10, zone=PARIS), 2)) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ]


DST_CRONS = ["30 2 * * *", "0 30 2 * * *", "*/30 * * * *", "0,30 1-3 * * *", "*/15 2 * * *", "0 */10 * * * *"]


@hypothesis.given(
    cron=strategies.sampled_from(DST_CRONS),
    transition=strategies.sampled_from([SPRING_FORWARD, FALL_BACK]),
    offset_s=strategies.integers(min_value=0, max_value=6 * 3600),
)
def test_around_a_dst_change_every_tick_is_new_and_later_than_the_last(
    cron: str, transition: datetime.datetime, offset_s: int
) -> None:
    schedule = PeriodicSchedule("t", cron, "Europe/Paris")
    start = transition + datetime.timedelta(seconds=offset_s)
    found = ticks(schedule, start, 12)
    assert found[0] > start and found == sorted(set(found))
    if schedule.keeps_wall_clock_time:  # a fixed time of day: never the same wall time twice
        walls = [tick.astimezone(PARIS).replace(tzinfo=None) for tick in found]
        assert len(set(walls)) == len(walls)
    # Counting from any tick gives the same ticks after it: the plan never defers one twice.
    assert ticks(schedule, found[3], 8) == found[4:]


# -- which ticks are due -------------------------------------------------------------------------

FIVE_MINUTES = PeriodicSchedule("t", "*/5 * * * *", catch_up_s=600.0)


def test_nothing_is_due_between_ticks_and_the_next_tick_is_named() -> None:
    plan = plan_ticks(FIVE_MINUTES, since=at(2026, 1, 1, 12, 0), now=at(2026, 1, 1, 12, 3))
    assert plan == periodic.TickPlan(due=(), skipped=None, next_tick_at=at(2026, 1, 1, 12, 5))


def test_ticks_missed_within_the_catch_up_are_due_oldest_first() -> None:
    plan = plan_ticks(FIVE_MINUTES, since=at(2026, 1, 1, 12, 0), now=at(2026, 1, 1, 12, 9, 30))
    assert plan.due == (at(2026, 1, 1, 12, 5),)
    plan = plan_ticks(FIVE_MINUTES, since=at(2026, 1, 1, 11, 55), now=at(2026, 1, 1, 12, 5, 0, 200))
    assert (plan.due, plan.skipped, plan.next_tick_at) == ((at(2026, 1, 1, 12, 0), at(2026, 1, 1, 12, 5)), None, at(2026, 1, 1, 12, 10))


def test_ticks_missed_by_more_than_the_catch_up_are_skipped_not_due() -> None:
    plan = plan_ticks(FIVE_MINUTES, since=at(2026, 1, 1, 10, 0), now=at(2026, 1, 1, 12, 3))
    assert plan.due == (at(2026, 1, 1, 11, 55), at(2026, 1, 1, 12, 0))  # within 10 minutes of 12:03
    assert plan.skipped == periodic.SkippedTicks(at(2026, 1, 1, 10, 5), at(2026, 1, 1, 11, 50), 22, counted_all=True)


def test_skipped_ticks_are_counted_up_to_a_bound_and_the_last_one_still_found() -> None:
    every_second = PeriodicSchedule("t", "* * * * * *", catch_up_s=60.0)
    now = at(2026, 1, 8, 12, 0)
    plan = plan_ticks(every_second, since=at(2026, 1, 1, 12, 0), now=now)  # a week of seconds
    assert plan.skipped is not None
    assert (plan.skipped.count, plan.skipped.counted_all) == (periodic.MAX_COUNTED_SKIPS, False)
    assert (plan.skipped.first_at, plan.skipped.last_at) == (at(2026, 1, 1, 12, 0, 1), now - datetime.timedelta(seconds=60))
    assert len(plan.due) == 60 and plan.next_tick_at == now + datetime.timedelta(seconds=1)


def test_a_long_catch_up_is_deferred_in_bounded_batches() -> None:
    every_second = PeriodicSchedule("t", "* * * * * *", catch_up_s=3600.0)
    now = at(2026, 1, 1, 12, 0)
    plan = plan_ticks(every_second, since=now - datetime.timedelta(hours=1), now=now)
    assert len(plan.due) == periodic.MAX_TICKS_PER_CALL
    assert plan.next_tick_at is not None and plan.next_tick_at <= now  # more are due at once
    assert plan.next_tick_at == plan.due[-1] + datetime.timedelta(seconds=1)
