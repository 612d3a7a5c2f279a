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
from collections.abc import Iterator
from contextlib import closing

import psycopg2
import psycopg2.errors

from benchmarks.peers.protocol import HARNESS_APPLICATION_NAME
from devdb import databases, servers
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
        return databases.dsn_of(self.admin_dsn, database)

    def settings(self) -> dict[str, str]:
        with closing(psycopg2.connect(self.admin_dsn)) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name", (list(REPORTED_SETTINGS),))
            return dict(cursor.fetchall())

    @contextlib.contextmanager
    def fresh_database(self, label: str, *, cabbage_schema: bool = True) -> Iterator[str]:
        """A new database (with cabbage's schema unless told otherwise), dropped on the way out."""
        name = f"bench_{label}_{os.getpid()}"
        databases.drop_database(self.admin_dsn, name)  # left by a killed run whose pid was ours
        databases.create_database(self.admin_dsn, name)
        dsn = self.dsn_of(name)
        try:
            if cabbage_schema:
                apply_schema(dsn)
            yield dsn
        finally:
            try:
                databases.drop_database(self.admin_dsn, name, timeout_s=15.0)
            except psycopg2.errors.ObjectInUse:
                print(f"benchmarks: could not drop database {name}: still in use", file=sys.stderr)


@contextlib.contextmanager
def cursor_on(dsn: str) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor on an autocommit connection for the harness's own queries; closed afterwards.

    Its application_name tells it apart from the connections of the system under test."""
    with closing(psycopg2.connect(dsn, application_name=HARNESS_APPLICATION_NAME)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            yield cursor
