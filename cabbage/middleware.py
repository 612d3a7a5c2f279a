"""Task middleware: code that runs around every attempt of every task of a TaskManager.

A middleware is a generator function that takes the running job's ``JobContext`` and yields
once: the code before the ``yield`` runs before the task, the code after it once the task has
returned. The task's exception is thrown in at the ``yield``, so ``try``/``finally`` and
``except`` work; a middleware that looks at an exception should re-raise it (one that
swallows it makes the attempt a success). A middleware that raises before its ``yield`` fails
the attempt with its exception, as the task would, and the task does not run. Middleware run
in registration order, the first registered outermost::

    task_manager = cabbage.TaskManager(middleware=[log_attempts])

    @task_manager.middleware
    def time_it(context):
        started = time.monotonic()
        try:
            yield
        finally:
            log.info("task_timed", task_name=context.task.name, duration_s=time.monotonic() - started)

The same middleware wraps ``def`` and ``async def`` tasks. For an ``async def`` task the code
around the ``yield`` runs on the event loop, before and after the task is awaited: it must
not block (no ``time.sleep``, no blocking I/O), or every job of that loop waits. An async
task cancelled at its ``timeout=`` throws ``asyncio.CancelledError`` in at the ``yield``
(not an ``Exception``: ``finally`` sees it, ``except Exception`` does not).

The worker runs a task through ``run_with_middleware`` (``cabbage.attempts``).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Generator, Iterable, Iterator, Mapping, Sequence, overload

from cabbage.exceptions import ConfigurationError
from cabbage.job_context import JobContext

Middleware = Callable[[JobContext], Generator[None, None, None]]


class MiddlewareChain(Sequence[Middleware]):
    """A TaskManager's middleware, in registration order (the first outermost). Calling it
    registers one, so it is also the decorator ``@task_manager.middleware``.

    >>> @task_manager.middleware
    ... def log_attempts(context):
    ...     log.info("attempt_began", job_id=context.job.id, attempt=context.attempt)
    ...     yield
    """

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self._middleware: list[Middleware] = []
        for each in middleware:
            self(each)

    def __call__(self, middleware: Middleware) -> Middleware:
        """Registers ``middleware`` after the others; returns it unchanged."""
        self._middleware.append(_checked(middleware))
        return middleware

    @overload
    def __getitem__(self, index: int) -> Middleware: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Middleware]: ...

    def __getitem__(self, index: int | slice) -> Middleware | Sequence[Middleware]:
        return self._middleware[index]

    def __len__(self) -> int:
        return len(self._middleware)

    def __repr__(self) -> str:
        return f"<MiddlewareChain [{', '.join(_name_of(each) for each in self._middleware)}]>"


def run_with_middleware(
    middleware: Sequence[Middleware], context: JobContext, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    """Calls ``context.task`` with ``args`` and ``kwargs`` inside every middleware and returns
    what it returns. For an ``async def`` task, returns a coroutine that does so when awaited:
    the middleware then surround the awaiting, not the mere creation of the coroutine."""
    func = context.task.func
    if inspect.iscoroutinefunction(func):  # as the worker tells (cabbage.attempts.is_async)
        return _await_inside(middleware, context, func, args, kwargs)
    if not middleware:
        return func(*args, **kwargs)
    with _inside(middleware, context):
        return func(*args, **kwargs)


async def _await_inside(
    middleware: Sequence[Middleware], context: JobContext, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    with _inside(middleware, context):
        return await func(*args, **kwargs)


@contextlib.contextmanager
def _inside(middleware: Sequence[Middleware], context: JobContext) -> Iterator[None]:
    # A middleware that raises before its yield leaves the stack: the ones entered before it see
    # that exception at their own yield, as they would the task's.
    with contextlib.ExitStack() as stack:
        for each in middleware:
            stack.enter_context(contextlib.contextmanager(each)(context))
        yield


def _checked(middleware: Any) -> Middleware:
    name = _name_of(middleware)
    if inspect.isasyncgenfunction(middleware):
        raise ConfigurationError(
            f"middleware {name} is an async generator; write it as a plain def with one yield: it wraps async "
            "tasks too, on their event loop"
        )
    if not inspect.isgeneratorfunction(middleware):
        raise ConfigurationError(
            f"middleware {name} must be a generator function that yields once, as in def {name}(context): ... yield ...; "
            f"got {middleware!r}"
        )
    return middleware  # type: ignore[no-any-return]


def _name_of(middleware: Any) -> str:
    return getattr(middleware, "__name__", type(middleware).__name__)


__all__ = ["JobContext", "Middleware", "MiddlewareChain", "run_with_middleware"]
