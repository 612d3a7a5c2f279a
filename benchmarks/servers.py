"""Which PostgreSQL server the benchmarks use, and the fresh database each workload gets.

In order: ``--dsn``, else the server the tests would use (``devdb.servers``: CABBAGE_DSN,
libpq's PG* variables, the local server at 127.0.0.1:5432 if it answers), else a private
``devdb`` cluster with durable=True (fsync and synchronous_commit on, as in the reference
figures), destroyed at the end.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from contextlib import closing

import psycopg2
from psycopg2 import errors, sql
from psycopg2.extensions import make_dsn

from devdb import servers
from devdb.cluster import PrivateCluster
from cabbage.dsn import describe
from cabbage.schema import apply_schema

# The settings that decide what a commit costs, reported with the figures.
REPORTED_SETTINGS = ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")


class Server:
    """A PostgreSQL server on which the benchmarks create and drop their databases."""

    def __init__(self, admin_dsn: str, description: str, cluster: PrivateCluster | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.description = description
        self.cluster = cluster

    @classmethod
    def resolve(cls, dsn: str | None, *, private: bool = False) -> Server:
        if dsn is None and not private:
            dsn = servers.resolve_dsn(probe_local=True)
        if dsn == servers.LOCAL_DSN:
            return cls(dsn, "the local server at 127.0.0.1:5432")
        if dsn is not None and not private:
            return cls(dsn, f"the server of {describe(dsn)}")
        cluster = PrivateCluster.create(durable=True)
        cluster.start()
        return cls(cluster.dsn(), f"a private cluster in {cluster.base_dir} (durable)", cluster)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.destroy()

    def dsn_of(self, database: str) -> str:
        return make_dsn(self.admin_dsn, dbname=database)

    def settings(self) -> dict[str, str]:
        with closing(psycopg2.connect(self.admin_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name", (list(REPORTED_SETTINGS),))
            return dict(cursor.fetchall())

    @contextlib.contextmanager
    def fresh_database(self, label: str, *, cabbage_schema: bool = True) -> Iterator[str]:
        """A new database (with cabbage's schema unless told otherwise), dropped on the way out."""
        name = f"bench_{label}_{os.getpid()}"
        self._execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = self.dsn_of(name)
        try:
            if cabbage_schema:
                apply_schema(dsn)
            yield dsn
        finally:
            self._drop(name)

    def _drop(self, name: str, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._execute(
                sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}").format(
                    sql.Literal(name)
                )
            )
            try:
                self._execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                return
            except errors.ObjectInUse:
                if time.monotonic() > deadline:
                    print(f"benchmarks: could not drop database {name}: still in use", file=sys.stderr)
                    return
                time.sleep(0.1)

    def _execute(self, statement: sql.Composable) -> None:
        with closing(psycopg2.connect(self.admin_dsn)) as connection:
            connection.autocommit = True  # CREATE and DROP DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(statement)


@contextlib.contextmanager
def cursor_on(dsn: str) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor on an autocommit connection for the harness's own queries; closed afterwards."""
    with closing(psycopg2.connect(dsn)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            yield cursor
