"""What a NewJob's arguments may hold, and the JSON text jsonb stores them as. Both stores use
these (and ``cabbage.schedules`` for its schedule), so that they accept and refuse the same
jobs with the same messages (the store contract).

An argument is refused, naming it, when JSON cannot carry it or would change it on the way:

- a type JSON has no form for (a set, bytes, a datetime, ...), NaN or an infinity;
- a dict key that is not a str (JSON would write ``{1: "a"}`` as ``{"1": "a"}``, and of
  ``{1: "a", "1": "b"}`` keep only one);
- a str with a NUL character (PostgreSQL cannot store it) or a surrogate (UTF-8 cannot encode it);
- an int of more than ``MAX_INTEGER_DIGITS`` digits, which Python reads back from JSON only
  with its digit limit raised (``sys.set_int_max_str_digits``);
- lists and dicts nested more than ``MAX_NESTING_DEPTH`` deep: decoders recurse, and a worker
  must be able to read the job back.

A job whose arguments are longer, as JSON text (positional and keyword arguments together,
compact, non-ASCII characters written as ``\\uXXXX``), than its store's ``max_arguments_bytes``
(``DEFAULT_MAX_ARGUMENTS_BYTES``, 1 MB, unless the store was made with another) is refused too:
arguments travel with every claim and every admin page, and large data belongs elsewhere.

A job's priority must be a whole number in PostgreSQL's integer range, and its queueing lock a
non-empty str that PostgreSQL can store (``check_options``).
"""

from __future__ import annotations

import itertools
import json
import json.encoder
import math
import operator
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from cabbage.exceptions import ArgumentsTooLargeError, ConfigurationError, UnserialisableArgumentError
from cabbage.jobs import MAX_PRIORITY, MIN_PRIORITY, NewJob

# Python's default limit on the digits of an int read from text (sys.int_info
# .default_max_str_digits, 3.11+): a worker with that default can decode every stored int.
MAX_INTEGER_DIGITS = 4300
# Well within the recursion limits of json, psycopg2's jsonb decoding and PostgreSQL's parser.
MAX_NESTING_DEPTH = 100
DEFAULT_MAX_ARGUMENTS_BYTES = 1_000_000
# jsonb refuses a value of more than 2**28 - 1 bytes itself.
LARGEST_MAX_ARGUMENTS_BYTES = 2**28 - 1
_INTEGER_BOUND = 10**MAX_INTEGER_DIGITS  # an int of at most MAX_INTEGER_DIGITS digits is below it
_SURROGATE = re.compile("[\ud800-\udfff]")

# Like jsonb: no NaN or infinities. Compact: the text goes over the wire.
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

# What to pass instead of a value JSON cannot carry, by type name.
JSON_HINTS = {
    "set": "pass a list",
    "frozenset": "pass a list",
    "bytes": "pass a str (decode it, or base64 for binary data)",
    "bytearray": "pass a str (decode it, or base64 for binary data)",
    "datetime": "pass value.isoformat()",
    "date": "pass value.isoformat()",
    "time": "pass value.isoformat()",
    "timedelta": "pass value.total_seconds()",
    "Decimal": "pass str(value) or float(value)",
    "UUID": "pass str(value)",
    "complex": "pass [value.real, value.imag]",
}
DEFAULT_JSON_HINT = "pass JSON types: str, int, float, bool, None, list, dict with str keys"
NUL_IN_STR = ("str with a NUL character \\x00", "PostgreSQL cannot store it: remove it")
TOO_DEEP = (f"lists and dicts nested more than {MAX_NESTING_DEPTH} deep, or one that holds itself", "flatten it")
LONG_INT = (f"int of more than {MAX_INTEGER_DIGITS} digits", "pass str(value)")
Culprit = tuple[str, str]  # what was found, what to pass instead


# -- what an argument may hold ---------------------------------------------------------------------


def refuse_unstorable_arguments(owner: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raises UnserialisableArgumentError naming the first argument of ``owner`` (a task or
    function name) that a job cannot carry: ``argument 2 of write_alphabet ...``."""
    for position, value in enumerate(args, start=1):
        culprit = find_unstorable(value)
        if culprit is not None:
            _refuse(f"argument {position}", owner, culprit)
    for name, value in kwargs.items():
        culprit = _find_unstorable_text(name) if type(name) is str else _key_culprit(name)
        if culprit is not None:
            _refuse("a keyword argument name", owner, culprit)
        culprit = find_unstorable(value)
        if culprit is not None:
            _refuse(f"argument {name!r}", owner, culprit)


def find_unstorable(value: Any, depth: int = 0) -> Culprit | None:
    """The first thing inside ``value`` that a job's arguments cannot carry, as (what, hint)."""
    # Exact types first: they are nearly every value, and type() is cheaper than isinstance().
    kind = type(value)
    if kind is str:
        return _find_unstorable_text(value)
    if kind is int:
        return _find_unstorable_int(value)
    if value is None or kind is bool:
        return None
    if kind is float:
        return _find_unstorable_float(value)
    if kind is list or kind is tuple or kind is dict:
        return _find_unstorable_inside(value, depth)
    return _find_unstorable_subclass(value, depth)


def _find_unstorable_inside(container: Any, depth: int) -> Culprit | None:
    """``find_unstorable`` of a list, tuple or dict, its scalars checked in line: a defer_many
    of 100,000 calls walks them all, and a function call per value would double the cost."""
    if depth >= MAX_NESTING_DEPTH:
        return TOO_DEEP
    if isinstance(container, dict):
        for key in container:
            culprit = _find_unstorable_text(key) if type(key) is str else _key_culprit(key)
            if culprit is not None:
                return culprit
        container = container.values()
    inner = depth + 1
    for item in container:
        kind = type(item)
        if kind is str:
            culprit = _find_unstorable_text(item) if "\x00" in item or not item.isascii() else None
        elif kind is int:
            culprit = None if -_INTEGER_BOUND < item < _INTEGER_BOUND else LONG_INT
        elif item is None or kind is bool or (kind is float and math.isfinite(item)):
            continue
        elif kind is list or kind is tuple or kind is dict:
            culprit = _find_unstorable_inside(item, inner) if item or inner >= MAX_NESTING_DEPTH else None
        else:
            culprit = find_unstorable(item, inner)
        if culprit is not None:
            return culprit
    return None


def _find_unstorable_subclass(value: Any, depth: int) -> Culprit | None:
    """A subclass of a JSON type (an IntEnum, an OrderedDict) is carried as its base type."""
    if isinstance(value, str):
        return _find_unstorable_text(value)
    if isinstance(value, int):
        return _find_unstorable_int(value)
    if isinstance(value, float):
        return _find_unstorable_float(value)
    if isinstance(value, (list, tuple, dict)):
        return _find_unstorable_inside(value, depth)
    kind = type(value).__name__
    return kind, JSON_HINTS.get(kind, DEFAULT_JSON_HINT)


def _find_unstorable_int(value: int) -> Culprit | None:
    return None if -_INTEGER_BOUND < value < _INTEGER_BOUND else LONG_INT


def _find_unstorable_float(value: float) -> Culprit | None:
    return None if math.isfinite(value) else (f"float {value}", "pass a finite number or None")


def _find_unstorable_text(text: str) -> Culprit | None:
    if "\x00" in text:
        return NUL_IN_STR
    surrogate = _surrogate_in(text)
    if surrogate is not None:
        return (
            f"str with the surrogate {surrogate!r}, which UTF-8 cannot encode",
            "fix how the text was decoded (errors='surrogateescape' leaves them), or pass bytes as base64",
        )
    return None


def _surrogate_in(text: str) -> str | None:
    if text.isascii():  # a flag of the string: no search
        return None
    found = _SURROGATE.search(text)
    return found.group() if found is not None else None


def _key_culprit(key: Any) -> Culprit:
    if key is None or isinstance(key, (bool, int, float)):
        written = json.dumps(key)
        return f"dict key {key!r}, which JSON would turn into the str {written!r}", "use str keys"
    return f"dict key of type {type(key).__name__}", "use str keys"


def _refuse(label: str, owner: str, culprit: Culprit) -> None:
    what, hint = culprit
    raise UnserialisableArgumentError(f"{label} of {owner} is not JSON-serialisable ({what}); {hint}")


def check_text(field: str, value: str) -> str:
    """A queue, lock or task name, refused with ConfigurationError when PostgreSQL could not
    store it (a NUL character) or UTF-8 could not encode it (a surrogate)."""
    if "\x00" in value:
        raise ConfigurationError(f"{field} {value!r} contains a NUL character, which PostgreSQL cannot store; remove it")
    surrogate = _surrogate_in(value)
    if surrogate is not None:
        raise ConfigurationError(f"{field} {value!r} contains the surrogate {surrogate!r}, which UTF-8 cannot encode; remove it")
    return value


def check_job_texts(jobs: Sequence[NewJob]) -> None:
    """``check_text`` for the queues, task names and locks of jobs given to a store, each
    distinct value once (a defer_many's jobs share theirs)."""
    for field, values in (
        ("queue", {job.queue for job in jobs}),
        ("task name", {job.task_name for job in jobs}),
        ("lock", {job.lock for job in jobs}),
    ):
        for value in values:
            if isinstance(value, str):
                check_text(field, value)


def check_priority(priority: Any) -> int:
    """The priority, or ConfigurationError: a whole number in PostgreSQL's integer range."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ConfigurationError(
            f"priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY} (higher runs first), "
            f"got {priority!r} ({type(priority).__name__})"
        )
    return priority


def check_queueing_lock(queueing_lock: Any) -> str | None:
    """The queueing lock (None: none), or ConfigurationError: a non-empty str, as ``check_text``."""
    if queueing_lock is None:
        return None
    if not isinstance(queueing_lock, str) or not queueing_lock:
        raise ConfigurationError(
            "queueing_lock must be a non-empty string naming what may wait only once, "
            f"got {queueing_lock!r} ({type(queueing_lock).__name__}); pass str(...)"
        )
    return check_text("queueing lock", queueing_lock)


def check_options(jobs: Sequence[NewJob]) -> None:
    """Refuses the batch when a job's priority or queueing lock cannot be stored."""
    for job in jobs:
        if job.priority.__class__ is not int or not MIN_PRIORITY <= job.priority <= MAX_PRIORITY:
            check_priority(job.priority)
        if job.queueing_lock is not None:
            check_queueing_lock(job.queueing_lock)


# -- the JSON text ---------------------------------------------------------------------------------


def check_max_arguments_bytes(limit: int) -> int:
    """A store's ``max_arguments_bytes``, or ConfigurationError saying which values it takes."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LARGEST_MAX_ARGUMENTS_BYTES:
        raise ConfigurationError(
            f"max_arguments_bytes must be a whole number of bytes from 1 to {LARGEST_MAX_ARGUMENTS_BYTES} "
            f"(jsonb's own limit), got {limit!r}"
        )
    return limit


def encode_job_arguments(job: NewJob, limit: int) -> tuple[str, str]:
    """A job's (args, kwargs) as JSON text: an array and an object. What a job cannot carry
    is refused first, naming the argument and the task, and arguments longer than ``limit``."""
    refuse_unstorable_arguments(job.task_name, job.args, job.kwargs)
    # A call without arguments needs no encoding.
    args = _encode([job.task_name], job.args) if job.args else "[]"
    kwargs = _encode([job.task_name], as_dict(job.kwargs)) if job.kwargs else "{}"
    _refuse_longer_than(limit, job.task_name, len(args) + len(kwargs))
    return args, kwargs


def encode_arguments_of_many(
    owners: Sequence[str], args_of_calls: list[Sequence[Any]], kwargs_of_calls: list[Mapping[str, Any]], limit: int
) -> tuple[str, str]:
    """The JSON array of each call's args and the JSON array of each call's kwargs, encoded at
    once; ``owners`` are the calls' task names, for the refusals; each call's arguments may
    take ``limit`` bytes."""
    kwargs_of_calls = [as_dict(kwargs) for kwargs in kwargs_of_calls]
    # One walk over all calls at once (each call's arguments at depth 0) costs a third of a
    # check per call; the refusal that names the argument looks for it only when one is bad.
    if find_unstorable(args_of_calls, depth=-2) is not None or find_unstorable(kwargs_of_calls, depth=-2) is not None:
        for owner, args, kwargs in zip(owners, args_of_calls, kwargs_of_calls):
            refuse_unstorable_arguments(owner, args, kwargs)
    # json encodes a tuple as an array; only a Mapping that is not a dict needed a copy.
    args_text, kwargs_text = _encode(owners, args_of_calls), _encode(owners, kwargs_of_calls)
    if len(args_text) + len(kwargs_text) > limit:  # else no call can be over it
        sizes = map(operator.add, _sizes_of(args_of_calls), _sizes_of(kwargs_of_calls))
        for owner, size in zip(owners, sizes):
            _refuse_longer_than(limit, owner, size)
    return args_text, kwargs_text


def as_dict(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments as a dict, which json encodes (a Mapping that is not one it does not)."""
    return kwargs if isinstance(kwargs, dict) else dict(kwargs)


def _encode(owners: Sequence[str], value: Any) -> str:
    try:
        return _JSON.encode(value)
    except (TypeError, ValueError) as exc:  # checked values fail only when Python's own digit limit is lower
        owner = ", ".join(sorted(set(owners)))
        raise UnserialisableArgumentError(f"arguments of {owner} are not JSON-serialisable ({exc}); pass JSON types") from exc


def _make_c_encoder() -> Callable[[Any, int], list[str]] | None:
    """json's own C encoder, made once with ``_JSON``'s options, as ``JSONEncoder.encode`` makes
    one on each call; None where json has none, or one this code does not know how to make."""
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:
        return None
    try:
        # No circular check (markers None): values are checked first, and one that holds itself
        # is refused as nested too deep.
        encoder = make_encoder(None, _JSON.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
        encoder([], 0)
    except TypeError:
        return None
    return encoder  # type: ignore[no-any-return]


_C_ENCODER = _make_c_encoder()


def _sizes_of(values: list[Any]) -> Iterable[int]:
    """The length of each value's JSON text: about the cost of encoding them all at once, where
    ``JSONEncoder.encode`` on each, making an encoder per value, costs five times as much."""
    if _C_ENCODER is None:
        return map(len, map(_JSON.encode, values))
    return map(len, map("".join, map(_C_ENCODER, values, itertools.repeat(0))))


def _refuse_longer_than(limit: int, owner: str, size: int) -> None:
    if size > limit:
        raise ArgumentsTooLargeError(
            f"arguments of {owner} are {size:,} bytes of JSON, over the store's max_arguments_bytes of {limit:,}; "
            "store large data elsewhere and pass its key, or raise max_arguments_bytes"
        )
