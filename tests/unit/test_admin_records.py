"""The admin records without a database: how cut texts are marked, and what the listing and
job queries read (the cutting happens in SQL, so a 100 MB argument never leaves the database)."""

from __future__ import annotations

import re

import pytest

from cabbage.admin import MAX_SHOWN_CHARS
from cabbage.admin.records import marked_as_cut
from cabbage.sql import queries


@pytest.mark.parametrize(
    ("shown", "whole_chars", "marked"),
    [
        ("abc", 3, "abc"),
        ("abc", 4, "abc… [cut: 1 more characters, 4 in all]"),
        ("x" * 5, 100_000_005, "xxxxx… [cut: 100,000,000 more characters, 100,000,005 in all]"),
        (None, None, None),
        ("", 0, ""),
    ],
)
def test_a_cut_text_says_how_much_was_cut(shown, whole_chars, marked):
    assert marked_as_cut(shown, whole_chars) == marked


def selected_columns(query: str) -> str:
    """The select list, up to the FROM that starts a line (a subquery's FROM does not), with
    the table alias dropped."""
    columns = re.search(r"SELECT(.*?)\n\s*FROM\b", queries[query], re.DOTALL).group(1)
    return columns.replace("j.", "")


def test_the_listing_reads_no_arguments_and_no_traceback():
    columns = selected_columns("admin_list_jobs")
    assert not re.search(r"\b(args|kwargs)\b", columns)
    assert "NULL AS last_error_traceback" in columns and "left(last_error, %(max_chars)s)" in columns


def test_one_job_has_its_texts_cut_in_the_database():
    columns = selected_columns("admin_get_job")
    for cut in ("left(last_error, %(max_chars)s)", "left(last_error_traceback, %(max_chars)s)",
                "left(arguments.text, %(max_chars)s)"):  # fmt: skip
        assert cut in columns
    # The arguments come as jsonb only inside a CASE that checks they fit.
    assert re.findall(r"THEN (args|kwargs) END", columns) == ["args", "kwargs"]


def test_attempts_have_their_texts_cut_in_the_database():
    columns = selected_columns("admin_list_attempts")
    assert "left(error, %(max_chars)s)" in columns and "left(traceback, %(max_chars)s)" in columns
    assert MAX_SHOWN_CHARS == 20_000  # the size docs/monitoring.md documents
