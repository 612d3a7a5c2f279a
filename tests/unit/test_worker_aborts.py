"""Aborting a running job, on the in-memory store: the worker's heartbeat learns the request, a
def task sees should_abort(), an async one is cancelled, and the job ends cancelled."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Iterator

import pytest

import cabbage
from cabbage.jobs import AttemptOutcome, Status
from cabbage.testing import InMemoryJobStore
from tests.waiting import wait_for

WAIT_S = 10.0  # only reached when the abort never arrives


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=InMemoryJobStore)


@pytest.fixture
def store(task_manager: cabbage.TaskManager) -> InMemoryJobStore:
    assert isinstance(task_manager.store, InMemoryJobStore)
    return task_manager.store


def named(events: list[Any], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == name]


@pytest.fixture
def abort_once_running(store: InMemoryJobStore) -> Iterator[Callable[[threading.Event, int], None]]:
    """Aborts job ``job_id`` from another thread (an operator) once ``started`` is set."""
    threads: list[threading.Thread] = []

    def abort_when(started: threading.Event, job_id: int) -> None:
        def operator() -> None:
            if started.wait(WAIT_S):
                store.abort_jobs([job_id], "alice@ops")

        threads.append(threading.Thread(target=operator, daemon=True))
        threads[-1].start()

    yield abort_when
    for thread in threads:
        thread.join(WAIT_S)


@pytest.fixture
def polling_task(task_manager: cabbage.TaskManager) -> tuple[cabbage.Task, threading.Event]:
    """A task that polls should_abort() once running (``started``) and stops by raising."""
    started = threading.Event()

    @task_manager.task
    def poll() -> None:
        started.set()
        wait_for(cabbage.current_job().should_abort, WAIT_S, "the abort")
        raise cabbage.JobAborted()

    return poll, started


def worker(task_manager: cabbage.TaskManager, **options: Any) -> cabbage.Worker:
    # Heartbeats far apart: the abort must come by notification, not by the next beat.
    return cabbage.Worker(task_manager, heartbeat_interval_s=60, heartbeat_timeout_s=300, **options)


def test_a_def_task_polling_should_abort_stops_and_its_job_is_cancelled(
    task_manager: cabbage.TaskManager, store: InMemoryJobStore, abort_once_running: Any, events: list[Any]
) -> None:
    started = threading.Event()
    seen: list[str | None] = []

    @task_manager.task(retry=5)
    def import_file() -> None:
        started.set()
        context = cabbage.current_job()
        wait_for(context.should_abort, WAIT_S, "the abort")
        seen.append(context.aborted_by)
        raise cabbage.JobAborted()

    job_id = import_file.defer()
    abort_once_running(started, job_id)
    assert worker(task_manager).process_jobs() == 1

    job = store.get_job(job_id)
    assert job is not None and job.status is Status.CANCELLED, "not retried, though it had attempts left"
    assert job.last_error is not None and str(job.last_error) == "Aborted: aborted by alice@ops"
    assert "JobAborted" in (job.last_error.traceback or ""), "where the task stopped is kept"
    assert seen == ["alice@ops"]
    assert [attempt.outcome for attempt in store.list_attempts(job_id)] == [AttemptOutcome.ABORTED]
    [requested] = named(events, "job_abort_requested")
    assert (requested["job_id"], requested["aborted_by"]) == (job_id, "alice@ops")
    [aborted] = named(events, "job_aborted")
    assert aborted["error_type"] == "cabbage.job_context.JobAborted"


def test_an_async_task_is_cancelled_when_its_job_is_aborted(
    task_manager: cabbage.TaskManager, store: InMemoryJobStore, abort_once_running: Any
) -> None:
    started = threading.Event()
    cancelled = []

    @task_manager.task
    async def long_wait() -> None:
        started.set()
        try:
            await asyncio.sleep(WAIT_S * 10)
        except asyncio.CancelledError:
            cancelled.append(cabbage.current_job().aborted_by)
            raise

    @task_manager.task
    async def neighbour() -> None:
        await asyncio.sleep(0)

    job_id = long_wait.defer()
    other = neighbour.defer()
    abort_once_running(started, job_id)
    assert worker(task_manager, concurrency=4).process_jobs() == 2

    job = store.get_job(job_id)
    assert job is not None and job.status is Status.CANCELLED
    assert job.last_error is not None and job.last_error.message == "aborted by alice@ops"
    assert cancelled == ["alice@ops"]
    assert store.get_job(other).status is Status.SUCCEEDED, "the loop's other jobs go on"  # type: ignore[union-attr]


def test_a_task_that_returns_despite_the_abort_succeeds(
    task_manager: cabbage.TaskManager, store: InMemoryJobStore, abort_once_running: Any
) -> None:
    started = threading.Event()

    @task_manager.task
    def finish_anyway() -> None:
        started.set()
        wait_for(cabbage.current_job().should_abort, WAIT_S, "the abort")

    job_id = finish_anyway.defer()
    abort_once_running(started, job_id)
    assert worker(task_manager).process_jobs() == 1
    assert store.get_job(job_id).status is Status.SUCCEEDED  # type: ignore[union-attr]


def test_a_threaded_task_learns_of_its_abort_and_the_others_run_on(
    task_manager: cabbage.TaskManager, store: InMemoryJobStore, abort_once_running: Any, polling_task: Any
) -> None:
    poll, started = polling_task

    @task_manager.task
    def other(n: int) -> None:
        pass

    job_id = poll.defer()
    others = other.defer_many([[n] for n in range(5)])
    abort_once_running(started, job_id)
    assert worker(task_manager, concurrency=3).process_jobs() == 6
    assert store.get_job(job_id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert {store.get_job(n).status for n in others} == {Status.SUCCEEDED}  # type: ignore[union-attr]


def test_current_job_names_the_running_attempt_and_nothing_outside_one(task_manager: cabbage.TaskManager) -> None:
    seen = []

    @task_manager.task
    def look() -> None:
        context = cabbage.current_job()
        seen.append((context.job.id, context.attempt, context.task.name, context.should_abort()))

    @task_manager.task
    async def look_async() -> None:
        context = cabbage.current_job()
        seen.append((context.job.id, context.attempt, context.task.name, context.should_abort()))

    first, second = look.defer(), look_async.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert seen == [(first, 1, look.name, False), (second, 1, look_async.name, False)]
    with pytest.raises(cabbage.NoCurrentJob, match="only known inside a task"):
        cabbage.current_job()


def test_middleware_sees_the_same_context_as_the_task(task_manager: cabbage.TaskManager) -> None:
    contexts = []

    @task_manager.middleware
    def remember(context: cabbage.JobContext) -> Iterator[None]:
        contexts.append(context)
        yield

    @task_manager.task
    def look() -> None:
        contexts.append(cabbage.current_job())

    look.defer()
    cabbage.Worker(task_manager).process_jobs()
    assert len(contexts) == 2 and contexts[0] is contexts[1]


def test_a_heartbeat_finds_an_abort_whose_notification_was_lost(
    task_manager: cabbage.TaskManager, store: InMemoryJobStore, polling_task: Any
) -> None:
    poll, started = polling_task

    job_id = poll.defer()

    def operator() -> None:
        assert started.wait(WAIT_S)
        store._abort_watches.clear()  # as if the notification were lost with a connection
        store.abort_jobs([job_id], "bob")

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    assert cabbage.Worker(task_manager, heartbeat_interval_s=0.05, heartbeat_timeout_s=30).process_jobs() == 1
    thread.join(WAIT_S)
    assert store.get_job(job_id).status is Status.CANCELLED  # type: ignore[union-attr]


def test_a_retried_job_runs_again_on_the_worker_that_aborted_it(
    task_manager: cabbage.TaskManager, store: InMemoryJobStore, abort_once_running: Any
) -> None:
    started = threading.Event()
    attempts = []

    @task_manager.task
    def stop_once_asked() -> None:
        context = cabbage.current_job()
        attempts.append((context.attempt, context.should_abort()))
        if context.attempt == 1:
            started.set()
            wait_for(context.should_abort, WAIT_S, "the abort")
            raise cabbage.JobAborted()

    job_id = stop_once_asked.defer()
    abort_once_running(started, job_id)
    same_worker = worker(task_manager)
    assert same_worker.process_jobs() == 1
    assert store.get_job(job_id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert store.retry_jobs([job_id]) == [job_id]
    assert same_worker.process_jobs() == 1
    assert store.get_job(job_id).status is Status.SUCCEEDED, "the retry is a new attempt, not the aborted one"  # type: ignore[union-attr]
    assert attempts == [(1, False), (2, False)]
