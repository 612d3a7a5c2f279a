"""Durations as operators type them (``1h30m``, ``7d``, ``90s``): parsing and display.

The ``cabbage`` command and ``cabbage-supervisor --retention`` take durations in this form;
the result is float seconds.

>>> parse_duration("1h30m")
5400.0
>>> format_duration(5400)
'1h30m'
"""

from __future__ import annotations

import re

from cabbage.exceptions import ConfigurationError

UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}

_PART = re.compile(r"(\d+(?:\.\d+)?)([a-z]+)")
_EXAMPLES = "as in 90s, 15m, 1h30m, 7d or 2w"


def parse_duration(text: str) -> float:
    """Seconds in a duration made of ``<number><unit>`` parts, units w, d, h, m, s, largest first.

    Raises ConfigurationError (a ValueError) naming the text and the expected form.
    """
    cleaned = "".join(text.split()).lower()  # "1h 30m" reads as "1h30m"
    if not cleaned:
        raise ConfigurationError(f"empty duration: give a number and a unit, {_EXAMPLES}")
    position, total, previous_unit_s = 0, 0.0, float("inf")
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        number, unit = match.groups()
        unit_s = UNIT_SECONDS.get(unit)
        if unit_s is None:
            raise ConfigurationError(
                f"unknown unit {unit!r} in duration {text!r}: use w, d, h, m or s, {_EXAMPLES}"
            )
        if unit_s >= previous_unit_s:
            raise ConfigurationError(
                f"duration {text!r} repeats a unit or is out of order: write units largest first, {_EXAMPLES}"
            )
        total += float(number) * unit_s
        previous_unit_s = unit_s
        position = match.end()
    if position != len(cleaned):
        hint = " (a bare number has no unit)" if re.fullmatch(r"\d+(\.\d+)?", cleaned) else ""
        raise ConfigurationError(f"cannot read duration {text!r}{hint}: write a number and a unit, {_EXAMPLES}")
    return total


def format_duration(seconds: float) -> str:
    """A short human form of a duration: ``45s``, ``3m20s``, ``1h30m``, ``2d4h``; negative is ``0s``.

    Only the two largest units are shown; below a minute, seconds keep one decimal under 10 s.
    """
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s".replace(".0s", "s")
    remaining = int(round(seconds))
    parts: list[tuple[int, str]] = []
    for unit, unit_s in UNIT_SECONDS.items():
        count, remaining = divmod(remaining, int(unit_s))
        if count or parts:
            parts.append((count, unit))
    shown = [f"{count}{unit}" for count, unit in parts[:2] if count]
    return "".join(shown) or "0s"
