"""The session's PostgreSQL for the integration and acceptance layers, and each test's database.

`pg_dsn` (session) is, in order: the configured DSN (CABBAGE_DSN or libpq's PG* variables); a
throwaway database on the local server at 127.0.0.1:5432 if it answers (skip that probe with
CABBAGE_TEST_NO_LOCAL_PG=1); else a private cluster (the repository's devdb package). `template_dsn` (session)
holds the schema, applied once; `db_dsn` (per test) is a fresh copy of it. Unit tests request
none of them, so they never start PostgreSQL. No database is an error, never a skip.
"""
from __future__ import annotations

import atexit
import logging
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest
import structlog
from psycopg2.extensions import make_dsn, parse_dsn

from devdb.databases import create_database, drop_database, terminate_backends

TESTS_DIR = Path(__file__).parent
LAYER_MARKERS = ("integration", "acceptance")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test with its layer's folder name, so that `-m` can select layers."""
    for item in items:
        try:
            layer = item.path.relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        if layer in LAYER_MARKERS:
            item.add_marker(getattr(pytest.mark, layer))


# -- databases ---------------------------------------------------------------------------------


def _drop_at_exit(owner_pid: int, admin_dsn: str, name: str) -> None:
    # A forked test process inherits atexit hooks; only the session's own process drops.
    if os.getpid() == owner_pid:
        drop_database(admin_dsn, name)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A DSN of the session's PostgreSQL, to a database the session may use freely."""
    from devdb import servers
    from devdb.cluster import PrivateCluster

    dsn = servers.resolve_dsn(probe_local=True)
    if dsn == servers.LOCAL_DSN:
        name = f"cabbage_test_{os.getpid()}_{secrets.token_hex(3)}"
        try:
            create_database(dsn, name)
        except psycopg2.Error:
            # Refused (no CREATEDB): the template and per-test databases need it, so go private.
            dsn = None
        else:
            yield from _throwaway_database(dsn, name)
            return
    if dsn is not None:
        yield dsn  # configured by the developer or CI: used as it is
        return
    cluster = PrivateCluster.create(durable=False)  # also destroyed by atexit
    try:
        cluster.start()
        yield cluster.dsn()
    finally:
        cluster.destroy()


def _throwaway_database(admin_dsn: str, name: str) -> Iterator[str]:
    atexit.register(_drop_at_exit, os.getpid(), admin_dsn, name)
    try:
        yield make_dsn(admin_dsn, dbname=name)
    finally:
        drop_database(admin_dsn, name)
        atexit.unregister(_drop_at_exit)


@pytest.fixture(scope="session")
def template_dsn(pg_dsn: str) -> Iterator[str]:
    """A database holding the current schema, applied once; copied by `db_dsn` for each test."""
    from cabbage.schema import apply_schema

    name = f"cabbage_tpl_{os.getpid()}"
    drop_database(pg_dsn, name)  # left by a killed session whose pid was ours
    create_database(pg_dsn, name)
    try:
        dsn = make_dsn(pg_dsn, dbname=name)
        apply_schema(dsn)
        yield dsn
    finally:
        drop_database(pg_dsn, name)


@pytest.fixture
def db_dsn(pg_dsn: str, template_dsn: str) -> Iterator[str]:
    """A fresh database with the schema, for this test alone."""
    template = parse_dsn(template_dsn)["dbname"]
    name = f"cabbage_t_{os.getpid()}_{secrets.token_hex(4)}"
    # CREATE DATABASE ... TEMPLATE refuses while anyone is connected to the template.
    terminate_backends(pg_dsn, template)
    create_database(pg_dsn, name, template=template)
    try:
        yield make_dsn(pg_dsn, dbname=name)
    finally:
        drop_database(pg_dsn, name)


@pytest.fixture
def empty_dsn(pg_dsn: str) -> Iterator[str]:
    """A fresh database with no cabbage schema at all, for this test alone."""
    name = f"cabbage_empty_{os.getpid()}_{secrets.token_hex(4)}"
    create_database(pg_dsn, name)
    try:
        yield make_dsn(pg_dsn, dbname=name)
    finally:
        drop_database(pg_dsn, name)


@pytest.fixture
def events() -> Iterator[list[Any]]:
    """Every structlog event while the test runs, with the bound context variables merged."""
    capture = structlog.testing.LogCapture()
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**saved)


@pytest.fixture
def logging_as_it_was() -> Iterator[None]:
    """``main`` configures logging for its process, as an entry point must; undo it for later tests."""
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (sys.excepthook, threading.excepthook)
    yield
    structlog.configure(**structlog_config)
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks
    logging.captureWarnings(False)
