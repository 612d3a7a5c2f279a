"""`cabbage schema apply` and the schema check: idempotent, upgrades equal fresh installs, clear messages."""

from __future__ import annotations

import os
import secrets
import threading
from contextlib import closing
from typing import Any, Iterator

import psycopg2
import pytest
from psycopg2.extensions import make_dsn

from cabbage import schema
from cabbage.exceptions import SchemaError
from cabbage.postgres import PostgresJobStore
from cabbage.sql import migrations
from tests.conftest import create_database, drop_database

APPLY_HINT = "run 'cabbage schema apply'"

# Every cabbage_ object, in a form that two databases with the same schema print alike.
CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relname LIKE 'cabbage\\_%%' AND c.relkind IN ('r', 'v', 'm')
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'cabbage\\_%%' ORDER BY 1",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
          FROM pg_constraint WHERE conrelid::regclass::text LIKE 'cabbage\\_%%' ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid)
          FROM pg_proc WHERE proname LIKE 'cabbage\\_%%' ORDER BY 1, 2""",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid)
          FROM pg_trigger WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'cabbage\\_%%' ORDER BY 1""",
    "types": """
        SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)
          FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
         WHERE t.typname LIKE 'cabbage\\_%%' GROUP BY 1 ORDER BY 1""",
    "sequences": """
        SELECT sequencename, data_type::text, increment_by, cache_size
          FROM pg_sequences WHERE sequencename LIKE 'cabbage\\_%%' ORDER BY 1""",
    "versions": "SELECT version, name FROM cabbage_schema_version ORDER BY 1",
}


def query(dsn: str, statement: str, params: Any = None) -> list[tuple]:
    with closing(psycopg2.connect(dsn)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []


def catalog(dsn: str) -> dict[str, list[tuple]]:
    return {name: query(dsn, statement) for name, statement in CATALOG_QUERIES.items()}


@pytest.fixture
def empty_dsn(pg_dsn: str) -> Iterator[str]:
    """A database with no cabbage schema at all."""
    name = f"cabbage_empty_{os.getpid()}_{secrets.token_hex(4)}"
    create_database(pg_dsn, name)
    try:
        yield make_dsn(pg_dsn, dbname=name)
    finally:
        drop_database(pg_dsn, name)


def test_the_current_version_is_the_last_migration() -> None:
    assert schema.CURRENT_VERSION == migrations()[-1][0] >= 2


def test_a_second_apply_changes_nothing(db_dsn: str) -> None:
    before = catalog(db_dsn)
    assert schema.apply_schema(db_dsn) == schema.CURRENT_VERSION
    assert catalog(db_dsn) == before
    assert schema.schema_version(db_dsn) == schema.CURRENT_VERSION
    schema.check_schema(db_dsn)


def test_every_object_of_the_schema_is_prefixed_cabbage(empty_dsn: str) -> None:
    schema.apply_schema(empty_dsn)
    unprefixed = query(
        empty_dsn,
        """
        SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname NOT LIKE 'cabbage\\_%%'
        UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proname NOT LIKE 'cabbage\\_%%'
        UNION ALL SELECT typname FROM pg_type WHERE typnamespace = 'public'::regnamespace
                    AND typname NOT LIKE 'cabbage\\_%%' AND typname NOT LIKE '\\_cabbage\\_%%'
        """,
    )
    assert unprefixed == []


@pytest.mark.parametrize("old_version", range(0, schema.CURRENT_VERSION))
def test_a_database_at_an_earlier_version_upgrades_to_the_fresh_schema(
    db_dsn: str, empty_dsn: str, old_version: int
) -> None:
    assert schema.apply_schema(empty_dsn, target_version=old_version) == old_version
    if old_version:
        with pytest.raises(SchemaError, match=f"at version {old_version}, this cabbage needs {schema.CURRENT_VERSION}"):
            schema.check_schema(empty_dsn)
    assert schema.apply_schema(empty_dsn) == schema.CURRENT_VERSION
    assert catalog(empty_dsn) == catalog(db_dsn)


def test_a_missing_schema_says_which_command_fixes_it(empty_dsn: str) -> None:
    expected = (
        f"database has no cabbage schema, this cabbage needs version {schema.CURRENT_VERSION}: {APPLY_HINT}"
    )
    assert schema.schema_version(empty_dsn) is None
    with pytest.raises(SchemaError) as raised:
        schema.check_schema(empty_dsn)
    assert str(raised.value) == expected
    with closing(PostgresJobStore(empty_dsn)) as store, pytest.raises(SchemaError) as raised_by_store:
        store.check_schema()
    assert str(raised_by_store.value) == expected


def test_an_older_schema_says_which_command_fixes_it(db_dsn: str) -> None:
    query(db_dsn, "DELETE FROM cabbage_schema_version WHERE version = %s", (schema.CURRENT_VERSION,))
    older = schema.CURRENT_VERSION - 1
    expected = f"database schema is at version {older}, this cabbage needs {schema.CURRENT_VERSION}: {APPLY_HINT}"
    with pytest.raises(SchemaError) as raised:
        schema.check_schema(db_dsn)
    assert str(raised.value) == expected
    with closing(PostgresJobStore(db_dsn)) as store, pytest.raises(SchemaError) as raised_by_store:
        store.check_schema()
    assert str(raised_by_store.value) == expected


def test_concurrent_applies_wait_for_each_other(empty_dsn: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def apply() -> None:
        try:
            results.append(schema.apply_schema(empty_dsn))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    appliers = [threading.Thread(target=apply) for _ in range(3)]
    for applier in appliers:
        applier.start()
    for applier in appliers:
        applier.join()
    assert errors == [] and results == [schema.CURRENT_VERSION] * 3
    assert query(empty_dsn, "SELECT count(*) FROM cabbage_schema_version") == [(schema.CURRENT_VERSION,)]
