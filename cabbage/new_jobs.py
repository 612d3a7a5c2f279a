"""What a NewJob's arguments become in a store: the JSON text jsonb stores. Both stores use
these (and ``cabbage.schedules`` for its schedule), so that they accept and refuse the same
jobs with the same messages (the store contract).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from cabbage.exceptions import UnserialisableArgumentError
from cabbage.jobs import NewJob

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
