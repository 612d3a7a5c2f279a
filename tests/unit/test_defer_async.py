"""Awaited defers from an asyncio app, on the in-memory store: the same jobs, the same refusals."""
from __future__ import annotations

import asyncio

import pytest

import cabbage
from cabbage.exceptions import ConfigurationError, UnserialisableArgumentError
from cabbage.jobs import Status
from cabbage.testing import InMemoryJobStore


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=InMemoryJobStore)


@pytest.fixture
def write_alphabet(task_manager: cabbage.TaskManager) -> cabbage.Task:
    @task_manager.task(queue="queue")
    def write_alphabet(floor: str) -> None: ...

    return write_alphabet


def test_defer_async_stores_the_job_defer_would(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager) -> None:
    async def app() -> list[int]:
        first = await write_alphabet.defer_async("a")
        second = await write_alphabet.configure(lock="/tmp/alphabet.txt", schedule_in={"hours": 1}).defer_async(floor="b")
        many = await write_alphabet.defer_many_async([["c"], {"floor": "d"}])
        return [first, second, *many]

    job_ids = asyncio.run(app())
    jobs = [task_manager.store.get_job(job_id) for job_id in job_ids]
    assert [(job.args, dict(job.kwargs)) for job in jobs if job] == [(("a",), {}), ((), {"floor": "b"}), (("c",), {}), ((), {"floor": "d"})]
    assert jobs[1] is not None and jobs[1].lock == "/tmp/alphabet.txt"
    assert all(job is not None and job.status is Status.TODO and job.queue == "queue" for job in jobs)
    assert cabbage.Worker(task_manager).process_jobs() == 3  # the scheduled one waits


def test_an_argument_json_cannot_carry_is_refused_by_name(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager) -> None:
    with pytest.raises(UnserialisableArgumentError, match=r"argument 'floor' of write_alphabet is not JSON-serialisable \(set\)"):
        asyncio.run(write_alphabet.defer_async(floor={"a"}))
    with pytest.raises(UnserialisableArgumentError, match="argument 1 of write_alphabet"):
        asyncio.run(write_alphabet.defer_many_async([["a"], [{"b"}]]))
    assert task_manager.store.jobs == ()  # type: ignore[attr-defined]


def test_a_connection_cannot_be_joined_from_an_event_loop(write_alphabet: cabbage.Task) -> None:
    with pytest.raises(ConfigurationError, match="defer_async cannot join the transaction of a connection="):
        asyncio.run(write_alphabet.configure(connection=object()).defer_async("a"))


def test_nothing_to_defer_is_nothing_stored(write_alphabet: cabbage.Task) -> None:
    assert asyncio.run(write_alphabet.defer_many_async([])) == []
