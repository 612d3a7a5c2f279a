"""The named-query loader, and the link between the .sql files and the code that uses them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cabbage
from cabbage.sql import QueryFileError, load_queries, migrations, parse_queries, queries

PACKAGE_DIR = Path(cabbage.__file__).parent  # type: ignore[arg-type]
QUERY_USE = re.compile(r"""queries\[\s*["']([a-z0-9_]+)["']\s*\]""")
STRING_LITERAL = re.compile(r"""["']([a-z0-9_]+)["']""")


def package_sources() -> list[str]:
    return [path.read_text(encoding="utf-8") for path in PACKAGE_DIR.rglob("*.py")]


def names_used_in_package() -> set[str]:
    """Names asked for as ``queries["name"]``."""
    return {name for source in package_sources() for name in QUERY_USE.findall(source)}


def test_every_named_query_is_used_somewhere_in_the_package() -> None:
    # A name may also reach queries[...] through a helper's argument (admin's _fetch_all), so
    # any string literal naming the query counts as a use.
    literals = {name for source in package_sources() for name in STRING_LITERAL.findall(source)}
    unused = set(queries) - literals
    assert not unused, f"named queries no code asks for: {sorted(unused)}"


def test_every_name_the_package_asks_for_exists() -> None:
    missing = names_used_in_package() - set(queries)
    assert not missing, f"queries[...] names with no block in cabbage/sql/*.sql: {sorted(missing)}"


def test_a_block_is_its_statement_without_the_leading_comments() -> None:
    text = (
        "-- The file's header.\n\n"
        "-- name: record_heartbeat\n"
        "-- Marks a worker alive (invariant 7).\n"
        "UPDATE cabbage_workers SET last_heartbeat_at = now()\n"
        " WHERE id = %(worker_id)s;\n\n"
        "-- name: get_job\n"
        "-- One job.\n"
        "-- A second comment line.\n"
        "SELECT * FROM cabbage_jobs -- keeps inner comments\n"
        " WHERE id = %(job_id)s;\n"
    )
    assert parse_queries(text, "x.sql") == [
        ("record_heartbeat", "UPDATE cabbage_workers SET last_heartbeat_at = now()\n WHERE id = %(worker_id)s;"),
        ("get_job", "SELECT * FROM cabbage_jobs -- keeps inner comments\n WHERE id = %(job_id)s;"),
    ]


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("-- name: get_job\nSELECT 1;\n", "needs a comment line"),
        ("-- name: get_job\n-- One job.\n\n", "has no statement"),
        ("-- name: GetJob\n-- One job.\nSELECT 1;\n", "snake_case"),
    ],
)
def test_a_malformed_block_is_refused_with_its_place(text: str, complaint: str) -> None:
    with pytest.raises(QueryFileError, match=complaint) as raised:
        parse_queries(text, "jobs.sql")
    assert "jobs.sql:1" in str(raised.value)


def test_a_name_defined_twice_stops_the_load(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: get_job\n-- One job.\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: get_job\n-- Another.\nSELECT 2;\n")
    with pytest.raises(QueryFileError, match="'get_job' is defined in both a.sql and b.sql"):
        load_queries(tmp_path)


def test_a_name_defined_twice_in_one_file_stops_the_load(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: get_job\n-- One.\nSELECT 1;\n-- name: get_job\n-- Two.\nSELECT 2;\n")
    with pytest.raises(QueryFileError, match="defined in both a.sql and a.sql"):
        load_queries(tmp_path)


def test_migrations_are_not_named_queries() -> None:
    steps = migrations()
    assert [version for version, _, _ in steps] == list(range(1, len(steps) + 1))
    assert steps[0][1] == "0001_initial.sql"
    assert not any("CREATE TABLE cabbage_jobs" in statement for statement in queries.values())


def test_migrations_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_initial.sql").write_text("SELECT 1;")
    (tmp_path / "0003_later.sql").write_text("SELECT 3;")
    with pytest.raises(QueryFileError, match="without gaps"):
        migrations(tmp_path)
    (tmp_path / "0003_later.sql").rename(tmp_path / "3_later.sql")
    with pytest.raises(QueryFileError, match="NNNN_snake_case"):
        migrations(tmp_path)
