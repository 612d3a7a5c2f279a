"""`cabbage schema apply` and the schema check: idempotent, upgrades equal fresh installs, clear messages."""

from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from cabbage import schema
from cabbage.exceptions import SchemaError
from cabbage.postgres import PostgresJobStore
from cabbage.sql import migrations

APPLY_HINT = "run 'cabbage schema apply'"
CURRENT_SCHEMA_FILE = Path(schema.__file__).parent / "sql" / "current" / "schema.sql"
CABBAGE_SCRIPT = Path(sys.executable).with_name("cabbage")

def query(dsn: str, statement: str, params: Any = None) -> list[tuple]:
    with closing(psycopg2.connect(dsn)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []


def catalog(dsn: str) -> str:
    """Every cabbage_ object as the catalog holds it: equal for databases with the same schema."""
    return schema.dump_schema(dsn)


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


def test_the_current_schema_file_is_what_the_migrations_build(db_dsn: str) -> None:
    assert CURRENT_SCHEMA_FILE.read_text() == catalog(db_dsn), (
        f"{CURRENT_SCHEMA_FILE} is not what the migrations build: regenerate it with `python -m devdb write-schema`"
    )


def test_schema_dump_prints_each_kind_of_object(db_dsn: str) -> None:
    dump = subprocess.run(
        [str(CABBAGE_SCRIPT), "schema", "dump", "--dsn", db_dsn], capture_output=True, text=True, check=True
    ).stdout
    assert dump == catalog(db_dsn)
    for expected in (
        "CREATE TYPE cabbage_job_status AS ENUM",
        "CREATE TABLE cabbage_jobs (",
        "CONSTRAINT cabbage_jobs_doing_has_worker CHECK",
        "CREATE UNIQUE INDEX cabbage_jobs_one_doing_per_lock",
        "CREATE OR REPLACE FUNCTION public.cabbage_claim_jobs_v1",
        "CREATE TRIGGER cabbage_jobs_place_in_line",
        f"-- migration {schema.CURRENT_VERSION}: ",
    ):
        assert expected in dump


def test_schema_dump_of_a_database_without_the_schema_says_what_to_do(empty_dsn: str) -> None:
    with pytest.raises(SchemaError, match=APPLY_HINT):
        schema.dump_schema(empty_dsn)


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
