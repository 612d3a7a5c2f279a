"""Fixtures shared by the integration tests: the PostgreSQL store, a plain connection, and jobs
put in each status (test_store_contract.py parametrises its own ``store`` over both stores)."""

from __future__ import annotations

from contextlib import closing
from typing import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from cabbage.postgres import PostgresJobStore
from tests.integration.job_states import JobStates


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


@pytest.fixture
def jobs(db_dsn: str) -> Iterator[JobStates]:
    """Jobs in each status, as a worker leaves them (the admin tests: CLI, web, metrics)."""
    states = JobStates.open(db_dsn)
    yield states
    states.close()
