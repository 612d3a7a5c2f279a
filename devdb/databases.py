"""Databases on a development server: created, copied from a template, and dropped for sure.

The tests make a database per session and per test, the benchmarks one per workload, and
``python -m devdb write-schema`` a throwaway one; they all create and drop them here. Dropping
ends the database's sessions first and retries while a killed worker's backend lingers.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import time
from contextlib import closing
from typing import Any, Iterator

from devdb import servers
from devdb.cluster import PrivateCluster

POLL_S = 0.05


def _connect(admin_dsn: str) -> Any:
    import psycopg2  # lazily: `import devdb` stays cheap for unit tests

    connection = psycopg2.connect(admin_dsn)
    connection.autocommit = True  # CREATE and DROP DATABASE cannot run in a transaction
    return connection


def execute(admin_dsn: str, statement: Any, params: Any = None) -> None:
    """Runs one statement on its own autocommit connection to the server."""
    with closing(_connect(admin_dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(statement, params)


def create_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    from psycopg2 import sql

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    execute(admin_dsn, statement)


def terminate_backends(admin_dsn: str, name: str) -> None:
    """Ends every session on database ``name`` but this one."""
    execute(
        admin_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def drop_database(admin_dsn: str, name: str, timeout_s: float = 10.0) -> None:
    """Drops the database, ending its sessions first (a killed worker's may linger briefly)."""
    from psycopg2 import errors, sql

    statement = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    deadline = time.monotonic() + timeout_s
    while True:
        terminate_backends(admin_dsn, name)
        try:
            execute(admin_dsn, statement)
            return
        except errors.ObjectInUse:
            # A terminated backend takes a moment to exit, and a supervisor may reconnect.
            if time.monotonic() >= deadline:
                raise
            time.sleep(POLL_S)


def dsn_of(admin_dsn: str, name: str) -> str:
    """The server's DSN with another database."""
    from psycopg2.extensions import make_dsn

    return make_dsn(admin_dsn, dbname=name)


@contextlib.contextmanager
def throwaway_database(label: str) -> Iterator[str]:
    """A new empty database on the server the tests would use (a private cluster when none
    answers), dropped on the way out; yields its DSN."""
    admin_dsn = servers.resolve_dsn(probe_local=True)
    cluster = None
    if admin_dsn is None:
        cluster = PrivateCluster.create(durable=False)
        cluster.start()
        admin_dsn = cluster.dsn()
    name = f"cabbage_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    create_database(admin_dsn, name)
    try:
        yield dsn_of(admin_dsn, name)
    finally:
        drop_database(admin_dsn, name)
        if cluster is not None:
            cluster.destroy()
