"""The named queries of cabbage/sql/*.sql, loaded once at import, and the numbered migrations.

Every statement cabbage runs is a block of a ``.sql`` file in this folder::

    -- name: record_heartbeat
    -- Marks a worker alive on the database clock (invariant 7).
    UPDATE cabbage_workers SET last_heartbeat_at = now() WHERE id = %(worker_id)s;

Python asks for it by name, ``queries["record_heartbeat"]``, with named parameters. The comment
lines after the name say what the query does and which invariant it serves; they are not sent.
A name defined twice, in one file or across files, stops the import.
"""

from __future__ import annotations

import re
from pathlib import Path

SQL_DIR = Path(__file__).parent
MIGRATIONS_DIR = SQL_DIR / "migrations"

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$")
_VALID_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")


class QueryFileError(ValueError):
    """A .sql file of cabbage/sql/ does not follow the named-block format."""


def parse_queries(text: str, source: str) -> list[tuple[str, str]]:
    """The (name, statement) blocks of one file's text, in file order.

    Lines before the first ``-- name:`` are the file's own header. Each block needs at least one
    comment line saying what it does, then a statement; its leading comments are dropped.
    """
    blocks: list[tuple[str, int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _NAME_LINE.match(line)
        if match:
            blocks.append((match["name"], number, []))
        elif blocks:
            blocks[-1][2].append(line)
    return [_parse_block(name, lines, f"{source}:{number}") for name, number, lines in blocks]


def _parse_block(name: str, lines: list[str], where: str) -> tuple[str, str]:
    if not _VALID_NAME.match(name):
        raise QueryFileError(f"{where}: query name {name!r} must be snake_case")
    comments = 0
    while comments < len(lines) and lines[comments].lstrip().startswith("--"):
        comments += 1
    if comments == 0:
        raise QueryFileError(f"{where}: query {name!r} needs a comment line saying what it does")
    statement = "\n".join(lines[comments:]).strip()
    if not statement:
        raise QueryFileError(f"{where}: query {name!r} has no statement")
    return name, statement


def load_queries(directory: Path) -> dict[str, str]:
    """Every named query of the ``*.sql`` files directly in ``directory`` (not migrations)."""
    queries: dict[str, str] = {}
    defined_in: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, statement in parse_queries(path.read_text(encoding="utf-8"), path.name):
            if name in queries:
                raise QueryFileError(f"query {name!r} is defined in both {defined_in[name]} and {path.name}")
            queries[name] = statement
            defined_in[name] = path.name
    return queries


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, str]]:
    """The schema's steps as (version, file name, sql), in version order."""
    steps: list[tuple[int, str, str]] = []
    for path in directory.glob("*.sql"):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise QueryFileError(f"migration file {path.name!r} must be named NNNN_snake_case.sql")
        steps.append((int(match["version"]), path.name, path.read_text(encoding="utf-8")))
    steps.sort()
    versions = [version for version, _, _ in steps]
    if versions != list(range(1, len(steps) + 1)):
        raise QueryFileError(f"migrations must be numbered 1, 2, 3... without gaps, found {versions}")
    return steps


queries: dict[str, str] = load_queries(SQL_DIR)

__all__ = ["queries", "migrations", "load_queries", "parse_queries", "QueryFileError"]
