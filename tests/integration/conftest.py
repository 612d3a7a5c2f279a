"""Fixtures shared by the integration tests of the PostgreSQL store (test_store_contract.py
parametrises its own ``store`` over both stores)."""

from __future__ import annotations

from contextlib import closing
from typing import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from cabbage.postgres import PostgresJobStore


@pytest.fixture
def store(db_dsn: str) -> Iterator[PostgresJobStore]:
    job_store = PostgresJobStore(db_dsn)
    yield job_store
    job_store.close()


@pytest.fixture
def sql(db_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A plain autocommit connection for writes no store method would make."""
    with closing(psycopg2.connect(db_dsn)) as connection:
        connection.autocommit = True
        yield connection
