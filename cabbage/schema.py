"""The database schema's version: checking it, and bringing a database to it (`cabbage schema apply`).

The schema is the numbered migrations of ``cabbage/sql/migrations``; ``cabbage_schema_version``
records which ran. Applying runs the missing ones in one transaction under an advisory lock,
so that concurrent applies wait for each other and a failed step leaves nothing behind.

>>> apply_schema("postgresql://app@db/app")   # idempotent: a second run changes nothing
1
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

import psycopg2

from cabbage import dsn as dsn_module
from cabbage.exceptions import DatabaseUnavailable, SchemaError, StoreError
from cabbage.sql import migrations, queries

CURRENT_VERSION: int = migrations()[-1][0]
APPLY_COMMAND = "cabbage schema apply"


def apply_schema(dsn: str, target_version: int | None = None) -> int:
    """Runs the migrations this database lacks, up to ``target_version`` (default: all).

    Returns the version now in place. Tests use ``target_version`` to build a database as an
    older cabbage left it.
    """
    target = CURRENT_VERSION if target_version is None else target_version
    with closing(dsn_module.connect(dsn, autocommit=False)) as connection:
        try:
            with connection, connection.cursor() as cursor:  # one transaction: commit or roll back
                cursor.execute(queries["lock_schema_changes"])
                cursor.execute(queries["create_schema_version_table"])
                version = _read_version(cursor) or 0
                for step_version, name, step_sql in migrations():
                    if version < step_version <= target:
                        cursor.execute(step_sql)
                        cursor.execute(queries["record_schema_version"], {"version": step_version, "name": name})
                        version = step_version
                return version
        except psycopg2.Error as exc:
            raise _store_error("cannot apply the cabbage schema to", dsn, exc) from None


def schema_version(dsn: str) -> int | None:
    """The version of the database's cabbage schema, or None when it has none."""
    with closing(dsn_module.connect(dsn)) as connection:
        try:
            return read_schema_version(connection)
        except psycopg2.Error as exc:
            raise _store_error("cannot read the cabbage schema version of", dsn, exc) from None


def check_schema(dsn: str) -> None:
    """Raises SchemaError, saying which command fixes it, unless the database is up to date."""
    check_schema_version(schema_version(dsn))


def read_schema_version(connection: Any) -> int | None:
    """``schema_version`` on an open psycopg2 connection; psycopg2 errors are the caller's."""
    with connection.cursor() as cursor:
        cursor.execute(queries["find_schema_version_table"])
        (has_schema,) = cursor.fetchone()
        return _read_version(cursor) if has_schema else None


def check_schema_version(version: int | None) -> None:
    """Raises SchemaError when ``version`` (None: no schema) is older than this cabbage needs."""
    if version is None:
        raise SchemaError(
            f"database has no cabbage schema, this cabbage needs version {CURRENT_VERSION}: run '{APPLY_COMMAND}'"
        )
    if version < CURRENT_VERSION:
        raise SchemaError(
            f"database schema is at version {version}, this cabbage needs {CURRENT_VERSION}: run '{APPLY_COMMAND}'"
        )


def _read_version(cursor: Any) -> int | None:
    cursor.execute(queries["read_schema_version"])
    (version,) = cursor.fetchone()
    return version


def _store_error(doing: str, dsn: str, exc: psycopg2.Error) -> StoreError:
    reason = dsn_module.reason_of(exc, dsn)
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return DatabaseUnavailable(f"{doing} {dsn_module.describe(dsn)}: {reason}")
    return StoreError(f"{doing} {dsn_module.describe(dsn)}: {reason}")


__all__ = ["CURRENT_VERSION", "apply_schema", "schema_version", "check_schema", "read_schema_version",
           "check_schema_version"]
