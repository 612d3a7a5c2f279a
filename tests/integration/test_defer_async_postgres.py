"""Awaited defers on PostgreSQL: psycopg2's asynchronous sessions on the app's event loop, which
runs on while the database works; many at once; lost sessions replaced."""
from __future__ import annotations

import asyncio
from contextlib import closing

import psycopg2
import pytest

import cabbage
from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import Status
from cabbage.postgres import PostgresJobStore


@pytest.fixture
def task_manager(db_dsn: str) -> cabbage.TaskManager:
    manager = cabbage.TaskManager(store_class=PostgresJobStore, dsn=db_dsn)
    yield manager
    manager.store.close()


@pytest.fixture
def write_alphabet(task_manager: cabbage.TaskManager) -> cabbage.Task:
    @task_manager.task(queue="queue")
    def write_alphabet(floor: str) -> None: ...

    return write_alphabet


def test_many_awaited_defers_at_once_each_store_one_job(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager) -> None:
    async def app() -> list[int]:
        singles = await asyncio.gather(*(write_alphabet.defer_async(f"letter-{n}") for n in range(200)))
        bulk = await write_alphabet.configure(lock="L").defer_many_async([[str(n)] for n in range(50)])
        return [*singles, *bulk]

    job_ids = asyncio.run(app())
    assert len(set(job_ids)) == 250
    assert task_manager.store.count_jobs()[Status.TODO] == 250
    line = [task_manager.store.get_job(job_id) for job_id in job_ids[200:]]
    assert [job.args[0] for job in line if job] == [str(n) for n in range(50)]  # the lock's line in order


def test_the_event_loop_runs_on_while_a_defer_waits_for_the_database(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, db_dsn: str
) -> None:
    """A lock held on the jobs table makes the insert wait; meanwhile another coroutine runs."""

    async def app(locker: psycopg2.extensions.connection) -> tuple[list[str], int]:
        order: list[str] = []
        defer = asyncio.create_task(write_alphabet.defer_async("a"))
        await asyncio.sleep(0.2)  # lets the defer reach the database and wait there
        order.append("the loop ran while the defer waited")
        assert not defer.done()
        locker.rollback()  # the lock goes: the insert proceeds
        job_id = await defer
        order.append("deferred")
        return order, job_id

    with closing(psycopg2.connect(db_dsn)) as locker:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLE cabbage_jobs IN ACCESS EXCLUSIVE MODE")
        order, job_id = asyncio.run(app(locker))
    assert order == ["the loop ran while the defer waited", "deferred"]
    assert task_manager.store.get_job(job_id) is not None


def test_a_lost_session_is_replaced_by_the_next_defer(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, db_dsn: str) -> None:
    def end_async_sessions() -> None:
        with closing(psycopg2.connect(db_dsn)) as admin:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'cabbage'"
                )

    async def app() -> int:
        await write_alphabet.defer_async("a")
        end_async_sessions()
        with pytest.raises(DatabaseUnavailable):
            await write_alphabet.defer_async("b")
        return await write_alphabet.defer_async("c")

    job_id = asyncio.run(app())
    assert task_manager.store.get_job(job_id) is not None
    assert task_manager.store.count_jobs()[Status.TODO] == 2
