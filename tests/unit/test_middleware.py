"""Task middleware on the in-memory store: order, the job's context, exceptions both ways,
registration, and async tasks (their coroutine run here with asyncio.run)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable, Iterator

import pytest

import cabbage
from cabbage.exceptions import ConfigurationError
from cabbage.jobs import Status
from cabbage.middleware import JobContext, run_with_middleware
from cabbage.testing import InMemoryJobStore


@pytest.fixture
def events() -> list[Any]:
    return []


def recording(events: list[Any], label: str) -> Callable[[JobContext], Iterator[None]]:
    """A middleware that records what it saw before and after the task."""

    def middleware(context: JobContext) -> Iterator[None]:
        events.append(f"{label} before")
        try:
            yield
        except Exception as exc:
            events.append(f"{label} saw {type(exc).__name__}")
            raise
        finally:
            events.append(f"{label} after")

    middleware.__name__ = label
    return middleware


@pytest.fixture
def task_manager(events: list[Any]) -> cabbage.TaskManager:
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore, middleware=[recording(events, "outer")])
    task_manager.middleware(recording(events, "inner"))
    return task_manager


def jobs_of(task_manager: cabbage.TaskManager) -> Any:
    assert isinstance(task_manager.store, InMemoryJobStore)
    return task_manager.store.jobs


def test_middleware_wrap_every_task_in_registration_order(task_manager: cabbage.TaskManager, events: list[Any]) -> None:
    @task_manager.task
    def write_alphabet(floor: str) -> str:
        events.append(f"task {floor}")
        return floor

    @task_manager.task
    def clean() -> None:
        events.append("task clean")

    write_alphabet.defer("a")
    clean.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert events == [
        "outer before", "inner before", "task a", "inner after", "outer after",
        "outer before", "inner before", "task clean", "inner after", "outer after",
    ]  # fmt: skip
    assert [job.status for job in jobs_of(task_manager)] == [Status.SUCCEEDED, Status.SUCCEEDED]
    assert [getattr(each, "__name__") for each in task_manager.middleware] == ["outer", "inner"]


def test_a_middleware_sees_the_job_its_task_and_the_attempt(events: list[Any]) -> None:
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)

    @task_manager.middleware
    def note(context: JobContext) -> Iterator[None]:
        events.append((context.job.id, context.task, context.attempt, context.job.args))
        yield

    @task_manager.task(retry=cabbage.RetryPolicy(max_attempts=2, wait_s=0))
    def flaky(floor: str) -> None:
        if len(events) == 1:
            raise OSError("disk busy")

    job_id = flaky.defer("a")
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert events == [(job_id, flaky, 1, ("a",)), (job_id, flaky, 2, ("a",))]
    assert jobs_of(task_manager)[0].status is Status.SUCCEEDED


def test_the_tasks_exception_is_thrown_in_at_the_yield_and_fails_the_attempt(
    task_manager: cabbage.TaskManager, events: list[Any]
) -> None:
    @task_manager.task
    def crash() -> None:
        raise ValueError("boom")

    crash.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 1
    assert events == ["outer before", "inner before", "inner saw ValueError", "inner after", "outer saw ValueError", "outer after"]
    [job] = jobs_of(task_manager)
    assert job.status is Status.FAILED and (job.last_error.type, job.last_error.message) == ("ValueError", "boom")


def test_a_middleware_that_raises_before_its_yield_fails_the_attempt_without_the_task(
    task_manager: cabbage.TaskManager, events: list[Any]
) -> None:
    @task_manager.middleware
    def authorise(context: JobContext) -> Iterator[None]:
        raise PermissionError(f"no token for {context.task.name}")
        yield  # a generator function all the same

    @task_manager.task(name="mail.send")
    def send() -> None:
        events.append("task ran")

    send.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 1
    assert events == ["outer before", "inner before", "inner saw PermissionError", "inner after", "outer saw PermissionError", "outer after"]
    [job] = jobs_of(task_manager)
    assert job.status is Status.FAILED
    assert (job.last_error.type, job.last_error.message) == ("PermissionError", "no token for mail.send")


def test_a_middleware_that_swallows_the_exception_makes_the_attempt_a_success() -> None:
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)

    @task_manager.middleware
    def forgive(context: JobContext) -> Iterator[None]:
        with contextlib.suppress(ValueError):
            yield

    @task_manager.task
    def crash() -> None:
        raise ValueError("boom")

    crash.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 1
    assert jobs_of(task_manager)[0].status is Status.SUCCEEDED


def not_a_generator(context: JobContext) -> None: ...


async def an_async_generator(context: JobContext) -> Any:
    yield


@contextlib.contextmanager
def already_a_context_manager(context: JobContext) -> Iterator[None]:
    yield


@pytest.mark.parametrize(
    ("middleware", "message"),
    [
        (not_a_generator, "^middleware not_a_generator must be a generator function that yields once, as in def not_a_generator"),
        (an_async_generator, "^middleware an_async_generator is an async generator; write it as a plain def with one yield"),
        (already_a_context_manager, "^middleware already_a_context_manager must be a generator function"),
        (print, "^middleware print must be a generator function"),
    ],
)
def test_only_generator_functions_are_middleware(middleware: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        cabbage.TaskManager(store_class=InMemoryJobStore, middleware=[middleware])
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)
    with pytest.raises(ConfigurationError, match=message):
        task_manager.middleware(middleware)
    assert list(task_manager.middleware) == []


def test_the_decorator_returns_the_middleware_unchanged(events: list[Any]) -> None:
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)
    middleware = recording(events, "kept")
    assert task_manager.middleware(middleware) is middleware
    assert list(task_manager.middleware) == [middleware] and len(task_manager.middleware) == 1


# -- async tasks ---------------------------------------------------------------------------------


def context_of(task_manager: cabbage.TaskManager, task: cabbage.Task, *args: Any) -> JobContext:
    job = task_manager.store.get_job(task.defer(*args))
    assert job is not None
    return JobContext(job, task)


def test_an_async_task_gets_a_coroutine_that_the_middleware_surround(task_manager: cabbage.TaskManager, events: list[Any]) -> None:
    @task_manager.task
    async def fetch(url: str) -> str:
        events.append("task started")
        await asyncio.sleep(0)  # the loop runs other work here: the middleware are still around
        events.append("task ended")
        return url.upper()

    running = run_with_middleware(task_manager.middleware, context_of(task_manager, fetch, "a"), ("a",), {})
    assert asyncio.iscoroutine(running) and events == []  # nothing runs before it is awaited
    assert asyncio.run(running) == "A"
    assert events == ["outer before", "inner before", "task started", "task ended", "inner after", "outer after"]


def test_an_async_tasks_exception_is_thrown_into_the_middleware(task_manager: cabbage.TaskManager, events: list[Any]) -> None:
    @task_manager.task
    async def fetch() -> None:
        await asyncio.sleep(0)
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError, match="no answer"):
        asyncio.run(run_with_middleware(task_manager.middleware, context_of(task_manager, fetch), (), {}))
    assert events == ["outer before", "inner before", "inner saw TimeoutError", "inner after", "outer saw TimeoutError", "outer after"]


def test_the_worker_runs_an_async_task_inside_the_middleware(task_manager: cabbage.TaskManager, events: list[Any]) -> None:
    @task_manager.task
    async def fetch(url: str) -> None:
        events.append("task started")
        await asyncio.sleep(0)
        events.append("task ended")

    @task_manager.task(timeout=0.05)
    async def hang() -> None:
        await asyncio.Event().wait()  # never set: cancelled at its timeout

    fetch.defer("a")
    hang.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert events == [
        "outer before", "inner before", "task started", "task ended", "inner after", "outer after",
        # CancelledError is no Exception: not in an except Exception, but finally runs.
        "outer before", "inner before", "inner after", "outer after",
    ]  # fmt: skip
    assert [job.status for job in jobs_of(task_manager)] == [Status.SUCCEEDED, Status.FAILED]


def test_without_middleware_the_task_is_called_as_it_is() -> None:
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)

    @task_manager.task
    def add(left: int, right: int = 0) -> int:
        return left + right

    assert run_with_middleware(task_manager.middleware, context_of(task_manager, add, 1), (1,), {"right": 2}) == 3
