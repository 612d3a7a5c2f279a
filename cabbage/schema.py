"""The database schema's version: checking it, bringing a database to it (`cabbage schema apply`),
and reading it back (`cabbage schema dump`).

The schema is the numbered migrations of ``cabbage/sql/migrations``; ``cabbage_schema_version``
records which ran. Applying runs the missing ones in one transaction under an advisory lock,
so that concurrent applies wait for each other and a failed step leaves nothing behind.
``describe_schema`` renders every cabbage_ object as the catalog holds it, as DDL: the schema
as it stands, readable in one file (``cabbage/sql/current/schema.sql``).

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


def dump_schema(dsn: str) -> str:
    """``describe_schema`` of the database at ``dsn``."""
    with closing(dsn_module.connect(dsn)) as connection:
        try:
            if read_schema_version(connection) is None:
                check_schema_version(None)  # raises: nothing to describe, and how to fix it
            return describe_schema(connection)
        except psycopg2.Error as exc:
            raise _store_error("cannot read the cabbage schema of", dsn, exc) from None


def describe_schema(connection: Any) -> str:
    """Every cabbage_ object of the database as DDL, read from its catalog, in a fixed order:
    two databases with the same schema describe alike. psycopg2 errors are the caller's."""

    def rows(name: str) -> list[dict[str, Any]]:
        with connection.cursor() as cursor:
            cursor.execute(queries[name])
            columns = [column[0] for column in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    migrations_run = rows("catalog_migrations")
    parts = [SCHEMA_FILE_HEADER.format(version=migrations_run[-1]["version"] if migrations_run else 0)]
    parts += [f"-- migration {row['version']}: {row['name']}" for row in migrations_run]
    for row in rows("catalog_types"):
        labels = ", ".join(f"'{label}'" for label in row["labels"])
        parts.append(f"\nCREATE TYPE {row['name']} AS ENUM ({labels});")
    for row in rows("catalog_sequences"):
        parts.append(f"\nCREATE SEQUENCE {row['name']} AS {row['data_type']} INCREMENT {row['increment_by']} CACHE {row['cache_size']};")
    tables: dict[str, list[str]] = {}
    for row in rows("catalog_columns"):
        column = f"    {row['name']} {row['type']}"
        column += " NOT NULL" if row["not_null"] else ""
        column += f" DEFAULT {row['default_value']}" if row["default_value"] is not None else ""
        tables.setdefault(row["table_name"], []).append(column)
    for row in rows("catalog_constraints"):
        tables[row["table_name"]].append(f"    CONSTRAINT {row['name']} {row['definition']}")
    for table_name, lines in tables.items():
        parts.append(f"\nCREATE TABLE {table_name} (\n" + ",\n".join(lines) + "\n);")
    parts += [f"\n{row['definition']};" for row in rows("catalog_indexes")]
    parts += [f"\n{row['definition'].strip()};" for row in rows("catalog_functions")]
    parts += [f"\n{row['definition']};" for row in rows("catalog_triggers")]
    return "\n".join(parts) + "\n"


SCHEMA_FILE_HEADER = """\
-- The cabbage schema as it stands at version {version}: every cabbage_ object, read back from
-- the catalog of a database that ran the migrations (`cabbage schema dump`). Generated, do not
-- edit: the migrations in cabbage/sql/migrations/ are the source, and
-- tests/integration/test_schema.py checks that this is what they build."""


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
           "check_schema_version", "dump_schema", "describe_schema"]
