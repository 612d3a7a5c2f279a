"""The JSON text both stores keep for a job's arguments, and how its size is measured."""

from __future__ import annotations

from typing import Any

from cabbage import new_jobs

VALUES: list[Any] = [[], {}, ["a", 1, 2.5, None, True], {"é": ["\U0001f600", {"": -0.0}]}, ("tuple",), [10**4299, 1e300]]


def test_sizes_are_those_of_the_text_encoded_at_once() -> None:
    assert list(new_jobs._sizes_of(VALUES)) == [len(new_jobs._JSON.encode(value)) for value in VALUES]
    assert new_jobs._JSON.encode(VALUES) == "[" + ",".join(new_jobs._JSON.encode(value) for value in VALUES) + "]"


def test_the_text_is_ascii_so_its_length_is_its_size_in_bytes() -> None:
    args, kwargs = new_jobs.encode_arguments_of_many(["t"] * 2, [["é\U0001f600"], []], [{}, {"k": "\u00ff"}], 1000)
    assert args.isascii() and kwargs.isascii()
    assert args == '[["\\u00e9\\ud83d\\ude00"],[]]'
