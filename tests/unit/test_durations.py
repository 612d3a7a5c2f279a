"""Operator durations: what parses, to how many seconds, and the messages for what does not."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cabbage.durations import format_duration, parse_duration
from cabbage.exceptions import CabbageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("7d", 604800.0),
        ("2w3d", 1468800.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("1D2H", 93600.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("7x", "unknown unit 'x' in duration '7x'"),
        ("90", "bare number has no unit"),
        ("h", "cannot read duration 'h'"),
        ("1h1h", "repeats a unit or is out of order"),
        ("30m1h", "repeats a unit or is out of order"),
        ("-5s", "cannot read duration '-5s'"),
        ("5s,", "cannot read duration"),
        ("5sec", "unknown unit 'sec'"),
    ],
)
def test_bad_duration_is_refused_with_the_text_and_the_expected_form(text, message):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert isinstance(caught.value, CabbageError)
    assert message in str(caught.value)
    assert "1h30m" in str(caught.value)  # every message shows the form to use


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0s"), (0, "0s"), (3.25, "3.2s"), (42, "42s"), (200, "3m20s"), (5400, "1h30m"), (90061, "1d1h"), (604800, "1w")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(min_value=10, max_value=10**8))
def test_formatted_whole_durations_parse_back_within_the_units_shown(seconds):
    shown = parse_duration(format_duration(seconds))
    # Two units are shown, so the error is below one unit of the second: at most a day in weeks.
    assert abs(shown - seconds) < 86400 and shown <= seconds + 1
