"""When a job becomes due: schedule_in counted from a clock, and the range a schedule must keep."""

from __future__ import annotations

import datetime

import pytest

from cabbage import schedules
from cabbage.exceptions import ScheduleError

UTC = datetime.timezone.utc


@pytest.mark.parametrize(
    ("now", "schedule_in", "expected"),
    [
        (datetime.datetime(2024, 1, 31, 12, tzinfo=UTC), {"months": 1}, datetime.datetime(2024, 2, 29, 12, tzinfo=UTC)),
        (datetime.datetime(2023, 1, 31, 12, tzinfo=UTC), {"months": 1}, datetime.datetime(2023, 2, 28, 12, tzinfo=UTC)),
        (datetime.datetime(2024, 3, 31, tzinfo=UTC), {"years": 1, "months": 1, "seconds": 60.0}, datetime.datetime(2025, 4, 30, 0, 1, tzinfo=UTC)),
        (datetime.datetime(2024, 11, 15, tzinfo=UTC), {"months": 14}, datetime.datetime(2026, 1, 15, tzinfo=UTC)),
        (datetime.datetime(2024, 1, 1, tzinfo=UTC), {"seconds": 5400.0}, datetime.datetime(2024, 1, 1, 1, 30, tzinfo=UTC)),
    ],
)
def test_due_at_adds_calendar_months_then_seconds(
    now: datetime.datetime, schedule_in: dict[str, float], expected: datetime.datetime
) -> None:
    assert schedules.due_at(schedule_in, now) == expected


def test_due_at_counts_months_in_utc_whatever_the_clocks_offset() -> None:
    # 2024-01-31T23:00-02:00 is February 1st in UTC: one month later is March 1st, as the
    # database adds months in UTC.
    now = datetime.datetime(2024, 1, 31, 23, tzinfo=datetime.timezone(datetime.timedelta(hours=-2)))
    assert schedules.due_at({"months": 1}, now) == datetime.datetime(2024, 3, 1, 1, tzinfo=UTC)


def test_due_at_keeps_the_last_moment_of_the_range_and_refuses_the_next() -> None:
    now = datetime.datetime(9999, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert schedules.due_at({"months": 1}, now) == schedules.LATEST_SCHEDULED_AT
    with pytest.raises(ScheduleError) as raised:
        schedules.due_at({"months": 1, "seconds": 1e-6}, now)
    assert str(raised.value) == (
        "schedule_in={'months': 1, 'seconds': 1e-06} from 9999-11-30T23:59:59+00:00 is outside the times a job "
        "can be scheduled at (from 0001-01-02T00:00:00+00:00 to 9999-12-30T23:59:59.999999+00:00, UTC); "
        "pick a time in that range"
    )


@pytest.mark.parametrize("schedule_in", [{"months": 1}, {"years": 10**40}, {"seconds": 1e300}])
def test_due_at_refuses_a_delay_past_year_9999(schedule_in: dict[str, float]) -> None:
    with pytest.raises(ScheduleError, match="ends after 9999-12-30T23:59:59.999999[+]00:00"):
        schedules.due_at(schedule_in, datetime.datetime(9999, 12, 15, tzinfo=UTC))


def test_every_time_in_the_range_fits_a_datetime_in_any_offset() -> None:
    almost_a_day = datetime.timedelta(hours=23, minutes=59, seconds=59)
    widest = [datetime.timezone(-almost_a_day), datetime.timezone(almost_a_day)]
    for moment in (schedules.EARLIEST_SCHEDULED_AT, schedules.LATEST_SCHEDULED_AT):
        for offset in widest:
            assert moment.astimezone(offset).astimezone(UTC) == moment
