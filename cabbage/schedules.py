"""When a job becomes due: ``schedule_at`` and ``schedule_in`` checked, folded, and read by the stores.

``Task.configure`` takes pendulum's duration units (``schedule_in={"hours": 1, "minutes":
30}``); they are folded here into the form a NewJob carries: calendar units (years, months)
kept apart, every fixed unit summed into seconds (``{"months": 1, "seconds": 5400.0}``). A
store adds that delay to *its own* clock (the database clock for PostgreSQL), calendar months
first. Every rule about units lives here, for the task API and for both stores.

A job is due between ``EARLIEST_SCHEDULED_AT`` and ``LATEST_SCHEDULED_AT`` (UTC): the years a
Python datetime holds (1 to 9999), less a day at each end, so that the time still fits a
datetime when it is read back in any time zone (offsets are under a day). A ``schedule_at``
outside that range, or a ``schedule_in`` that ends outside it counted from now, is refused.
"""

from __future__ import annotations

import calendar
import datetime
import math
from typing import Any, Mapping

from cabbage.exceptions import ScheduleError

# pendulum's duration units; everything but years and months is a fixed number of seconds.
SECONDS_PER_UNIT = {
    "weeks": 7 * 86400.0,
    "days": 86400.0,
    "hours": 3600.0,
    "minutes": 60.0,
    "seconds": 1.0,
    "milliseconds": 1e-3,
    "microseconds": 1e-6,
}
CALENDAR_UNITS = ("years", "months")
SCHEDULE_IN_UNITS = CALENDAR_UNITS + tuple(SECONDS_PER_UNIT)
# The units of a folded schedule_in, as a NewJob carries it to a store.
FOLDED_UNITS = CALENDAR_UNITS + ("seconds",)
SCHEDULE_IN_EXAMPLE = 'schedule_in={"hours": 1, "minutes": 30}'
UTC = datetime.timezone.utc
# The range of a job's scheduled_at; see the module docstring. A row outside it could not be
# read back: psycopg2 and the admin would fail on it, and a worker that claimed it would crash.
EARLIEST_SCHEDULED_AT = datetime.datetime(1, 1, 2, tzinfo=UTC)
LATEST_SCHEDULED_AT = datetime.datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
SCHEDULE_RANGE = f"from {EARLIEST_SCHEDULED_AT.isoformat()} to {LATEST_SCHEDULED_AT.isoformat()}"


def check_schedule(
    schedule_at: datetime.datetime | None, schedule_in: Mapping[str, float] | None
) -> tuple[datetime.datetime | None, dict[str, float] | None]:
    """``(schedule_at, folded schedule_in)`` for ``Task.configure``; at most one of them is set."""
    if schedule_at is not None and schedule_in is not None:
        raise ScheduleError(
            f"pass schedule_at or schedule_in, not both (got schedule_at={schedule_at} and schedule_in={schedule_in!r})"
        )
    if schedule_at is not None:
        return check_schedule_at(schedule_at), None
    if schedule_in is not None:
        folded = fold_schedule_in(schedule_in)
        due_at(folded, now_utc())  # refused now rather than at each defer
        return None, folded
    return None, None


def check_schedule_at(schedule_at: Any) -> datetime.datetime:
    """A timezone-aware datetime, or ScheduleError saying what to pass instead."""
    if not isinstance(schedule_at, datetime.datetime):
        raise ScheduleError(
            f"schedule_at must be a datetime.datetime, got {schedule_at!r} ({type(schedule_at).__name__}); "
            "for a delay, pass schedule_in"
        )
    if schedule_at.tzinfo is None or schedule_at.utcoffset() is None:
        raise ScheduleError(
            f"schedule_at must be timezone-aware, got {schedule_at} (naive); pass tzinfo=datetime.timezone.utc"
        )
    return _in_range(schedule_at, f"schedule_at {schedule_at.isoformat()}")


def fold_schedule_in(schedule_in: Mapping[str, float]) -> dict[str, float]:
    """``{"hours": 1, "minutes": 30}`` -> ``{"seconds": 5400.0}``; years and months stay calendar units."""
    if not isinstance(schedule_in, Mapping):
        raise ScheduleError(f"schedule_in must be a dict of pendulum duration units, got {schedule_in!r}; e.g. {SCHEDULE_IN_EXAMPLE}")
    folded: dict[str, float] = {}
    seconds = 0.0
    for unit, amount in schedule_in.items():
        if unit not in SCHEDULE_IN_UNITS:
            raise ScheduleError(
                f"schedule_in unit {unit!r} is not one of {', '.join(SCHEDULE_IN_UNITS)}; e.g. {SCHEDULE_IN_EXAMPLE}"
            )
        _check_amount(unit, amount)
        if unit in CALENDAR_UNITS:
            folded[unit] = amount
        else:
            seconds += amount * SECONDS_PER_UNIT[unit]
    if seconds or not folded:
        folded["seconds"] = seconds
    return folded


def _check_amount(unit: str, amount: Any) -> None:
    is_number = isinstance(amount, (int, float)) and not isinstance(amount, bool) and math.isfinite(amount)
    if not is_number or amount < 0:
        raise ScheduleError(f"schedule_in[{unit!r}] must be a number >= 0, got {amount!r}; e.g. {SCHEDULE_IN_EXAMPLE}")
    if unit in CALENDAR_UNITS and amount != int(amount):
        raise ScheduleError(f"schedule_in[{unit!r}] must be a whole number, got {amount!r}; use days or hours for fractions")


# -- what a store reads ----------------------------------------------------------------------------


def aware_scheduled_at(scheduled_at: datetime.datetime | None) -> datetime.datetime | None:
    """A NewJob's absolute schedule, refused when naive (its time zone would be a guess) or
    outside the schedule range."""
    if scheduled_at is None:
        return None
    if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
        raise ScheduleError(f"scheduled_at must be timezone-aware, got {scheduled_at} (naive)")
    return _in_range(scheduled_at, f"scheduled_at {scheduled_at.isoformat()}")


def delay_of(schedule_in: Mapping[str, float] | None) -> tuple[int, float] | None:
    """A folded schedule_in as (calendar months, seconds), added to the store's clock in that
    order; None without one."""
    if schedule_in is None:
        return None
    unknown = sorted(set(schedule_in) - set(FOLDED_UNITS))
    if unknown:
        raise ScheduleError(f"schedule_in units must be among {', '.join(FOLDED_UNITS)}, got {unknown}")
    months = schedule_in.get("years", 0) * 12 + schedule_in.get("months", 0)
    if months != int(months):
        raise ScheduleError(f"schedule_in years and months must be whole numbers, got {dict(schedule_in)}")
    return int(months), float(schedule_in.get("seconds", 0.0))


def due_at(schedule_in: Mapping[str, float], now: datetime.datetime) -> datetime.datetime:
    """When a folded schedule_in counted from ``now`` ends, in UTC: calendar months first (the
    day of the month kept, or the month's last day), then seconds, as PostgreSQL adds an
    interval. ScheduleError when that is outside the schedule range."""
    months, seconds = delay_of(schedule_in) or (0, 0.0)
    start = now.astimezone(UTC)
    described = f"schedule_in={dict(schedule_in)!r} from {start.isoformat(timespec='seconds')}"
    try:
        end = _add_months(start, months) + datetime.timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # past year 9999, or more seconds than a timedelta holds
        raise ScheduleError(
            f"{described} ends after {LATEST_SCHEDULED_AT.isoformat()}, the latest a job can be scheduled at; "
            "pass a shorter delay"
        ) from None
    return _in_range(end, described)


def _add_months(moment: datetime.datetime, months: int) -> datetime.datetime:
    years, month_index = divmod(moment.month - 1 + months, 12)
    year = moment.year + years  # past 9999, replace() raises ValueError
    last_day = calendar.monthrange(year, month_index + 1)[1]
    return moment.replace(year=year, month=month_index + 1, day=min(moment.day, last_day))


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def _in_range(moment: datetime.datetime, described: str) -> datetime.datetime:
    # Aware datetimes compare as instants, whatever their offsets, without any conversion that
    # could itself overflow (9999-12-31T23:59:59-05:00 is in year 10000 in UTC).
    if not EARLIEST_SCHEDULED_AT <= moment <= LATEST_SCHEDULED_AT:
        raise ScheduleError(f"{described} is outside the times a job can be scheduled at ({SCHEDULE_RANGE}, UTC); "
                            "pick a time in that range")
    return moment


__all__ = [
    "check_schedule",
    "check_schedule_at",
    "fold_schedule_in",
    "aware_scheduled_at",
    "delay_of",
    "due_at",
    "SCHEDULE_IN_UNITS",
    "EARLIEST_SCHEDULED_AT",
    "LATEST_SCHEDULED_AT",
]
