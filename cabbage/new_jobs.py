"""What a NewJob becomes in a store: its arguments as the JSON text jsonb stores, and its
schedule as an absolute time or a delay on the store's clock. Both stores use these, so that
they accept and refuse the same jobs with the same messages (the store contract).
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Mapping, Sequence

from cabbage.exceptions import ScheduleError, UnserialisableArgumentError
from cabbage.jobs import NewJob

# The units a NewJob's schedule_in is given in (Task.configure converts pendulum's).
SCHEDULE_IN_UNITS = ("years", "months", "seconds")

# Like jsonb: no NaN or infinities. Compact: the text goes over the wire.
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def encode_arguments(job: NewJob, value: Any) -> str:
    """``value`` (a job's args or kwargs) as JSON text; what jsonb cannot store is refused with
    an error naming the task."""
    try:
        encoded = _JSON.encode(value)
    except (TypeError, ValueError) as exc:
        raise UnserialisableArgumentError(
            f"arguments of {job.task_name} are not JSON-serialisable ({exc}); pass JSON types"
        ) from exc
    # jsonb refuses NUL too; "\\u0000" in the text may also be an escaped backslash: look closer.
    if "\\u0000" in encoded and _holds_nul(value):
        raise UnserialisableArgumentError(
            f"arguments of {job.task_name} contain a NUL character, which PostgreSQL cannot store; remove it"
        )
    return encoded


def encode_arguments_of_many(jobs: Sequence[NewJob], values: list[Any]) -> str:
    """The JSON array of every job's arguments, encoded at once; a value jsonb cannot store is
    refused by encode_arguments, which names its task."""
    encoded = _encode_at_once(values)
    if encoded is None or "\\u0000" in encoded:
        for job, value in zip(jobs, values):
            encode_arguments(job, value)
    assert encoded is not None, "a list that fails to encode has a member that fails"
    return encoded


def as_dict(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments as a dict, which json encodes (a Mapping that is not one it does not)."""
    return kwargs if isinstance(kwargs, dict) else dict(kwargs)


def aware_scheduled_at(job: NewJob) -> datetime.datetime | None:
    """The job's absolute schedule, refused when naive: its time zone would be a guess."""
    scheduled_at = job.scheduled_at
    if scheduled_at is not None and (scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None):
        raise ScheduleError(f"scheduled_at must be timezone-aware, got {scheduled_at} (naive)")
    return scheduled_at


def delay_of(job: NewJob) -> tuple[int, float] | None:
    """The job's schedule_in as (calendar months, seconds), added to the store's clock in that
    order; None without one."""
    if job.schedule_in is None:
        return None
    unknown = sorted(set(job.schedule_in) - set(SCHEDULE_IN_UNITS))
    if unknown:
        raise ScheduleError(f"schedule_in units must be among {', '.join(SCHEDULE_IN_UNITS)}, got {unknown}")
    months = job.schedule_in.get("years", 0) * 12 + job.schedule_in.get("months", 0)
    if months != int(months):
        raise ScheduleError(f"schedule_in years and months must be whole numbers, got {dict(job.schedule_in)}")
    return int(months), float(job.schedule_in.get("seconds", 0.0))


def _encode_at_once(values: list[Any]) -> str | None:
    try:
        return _JSON.encode(values)
    except (TypeError, ValueError):
        return None


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_nul(item) for item in value)
    return False
