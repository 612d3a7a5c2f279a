"""Task and its configured defer: argument and schedule validation, then one store call.

A ``Task`` is what ``@task_manager.task`` returns. Calling it runs the function here and now;
``defer`` stores a job for a worker. A bad option (a naive ``schedule_at``, an unknown
unit in ``schedule_in``) is refused here, before any store call; arguments JSON cannot carry are
refused by the store before it inserts anything, and explained here, naming the argument.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import structlog

from cabbage import new_jobs
from cabbage.exceptions import AlreadyEnqueued, ConfigurationError, UnserialisableArgumentError
from cabbage.jobs import DEFAULT_PRIORITY, NewJob
from cabbage.retry import RetryPolicy
from cabbage.schedules import check_schedule
from cabbage.store import JobStore

log = structlog.get_logger()


def _debug(event: str, **fields: Any) -> None:
    """A debug line, logged only where the app configured structlog: unconfigured, structlog
    prints every level on stdout, and each defer of a web request would print a line."""
    if structlog.is_configured():
        log.debug(event, **fields)


class Task:
    """A function declared with ``@task_manager.task``; defer it to run it in a worker.

    >>> @task_manager.task(queue="queue")
    ... def write_alphabet(floor): ...
    >>> write_alphabet("a")                 # runs the function now, in this process
    >>> write_alphabet.defer("a")           # stores a job; returns its id
    >>> write_alphabet.configure(lock="/tmp/alphabet.txt").defer("b")
    >>> write_alphabet.configure(priority=10, queueing_lock="alphabet").defer("c")
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        store: JobStore,
        name: str,
        queue: str,
        retry_policy: RetryPolicy,
        timeout_s: float | None,
        lock: str | None,
        priority: int = DEFAULT_PRIORITY,
        queueing_lock: str | None = None,
    ) -> None:
        # The user's function, not a decorator's wrapper: its name, docstring and signature.
        functools.update_wrapper(self, wrapped_function(func))
        self.func = func
        self.store = store  # its TaskManager's: where its jobs are deferred
        self.name = new_jobs.check_text("task name", name)
        self.queue = _check_queue(queue)
        self.retry_policy = retry_policy
        self.timeout_s = _check_timeout(timeout_s)
        self.lock = _check_lock(lock)
        self.priority = new_jobs.check_priority(priority)
        self.queueing_lock = new_jobs.check_queueing_lock(queueing_lock)
        self._default_description: JobDescription | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def configure(
        self,
        *,
        lock: str | None = None,
        schedule_at: datetime.datetime | None = None,
        schedule_in: Mapping[str, float] | None = None,
        queue: str | None = None,
        connection: Any = None,
        priority: int | None = None,
        queueing_lock: str | None = None,
    ) -> "JobDescription":
        """Options for the jobs deferred through the result; unset ones keep the task's.

        ``lock``: jobs sharing it run one at a time, in creation order.
        ``priority``: a whole number, higher claimed first among due jobs (default: the task's, 0);
        a lock's line still runs in creation order.
        ``queueing_lock``: at most one job with it may wait (``todo``); while one does, a defer
        raises ``cabbage.AlreadyEnqueued`` naming it and stores nothing (default: the task's, none).
        ``schedule_at``: a timezone-aware datetime; ``schedule_in``: a delay in pendulum duration
        units (``{"hours": 1, "minutes": 30}``), counted on the store's clock; not both. Either
        must fall within ``cabbage.schedules.EARLIEST_SCHEDULED_AT`` and ``LATEST_SCHEDULED_AT``
        (years 1 to 9999 less a day at each end, UTC).
        ``connection``: a psycopg2 connection whose transaction the insert joins, under a
        savepoint: a defer the database refuses leaves that transaction usable.

        >>> write_alphabet.configure(schedule_in={"minutes": 5}).defer("e")
        >>> write_alphabet.configure(queueing_lock="refresh", priority=5).defer("f")
        """
        return JobDescription(
            self,
            lock=self.lock if lock is None else _check_lock(lock),
            queue=self.queue if queue is None else _check_queue(queue),
            schedule=check_schedule(schedule_at, schedule_in),
            connection=connection,
            priority=self.priority if priority is None else new_jobs.check_priority(priority),
            queueing_lock=self.queueing_lock if queueing_lock is None else new_jobs.check_queueing_lock(queueing_lock),
        )

    def defer(self, *args: Any, **kwargs: Any) -> int:
        """Stores a job that calls this task with these arguments; returns the job id.

        >>> job_id = write_alphabet.defer("a")
        """
        return self._defaults().defer(*args, **kwargs)

    def defer_many(self, calls: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[int]:
        """Stores one job per call in a single round trip; see ``JobDescription.defer_many``.

        >>> write_alphabet.defer_many([["a"], ["b"], {"floor": "c"}])
        """
        return self._defaults().defer_many(calls)

    async def defer_async(self, *args: Any, **kwargs: Any) -> int:
        """``defer``, awaited from an asyncio app: the event loop runs on while the job is stored.

        >>> job_id = await write_alphabet.defer_async("a")
        """
        return await self._defaults().defer_async(*args, **kwargs)

    async def defer_many_async(self, calls: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[int]:
        """``defer_many``, awaited from an asyncio app.

        >>> await write_alphabet.defer_many_async([["a"], ["b"]])
        """
        return await self._defaults().defer_many_async(calls)

    def _defaults(self) -> "JobDescription":
        # Built once: a plain defer() then does no option checking at all.
        if self._default_description is None:
            self._default_description = self.configure()
        return self._default_description


# -- names -----------------------------------------------------------------------------------------


def default_task_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of the function the user wrote (``wrapped_function``), the task's
    name unless ``name=`` gives one. ConfigurationError when that function cannot be told."""
    wrapped = wrapped_function(func)
    closed_over = _functions_a_wrapper_closes_over(wrapped)
    if len(closed_over) > 1:
        raise ConfigurationError(
            f"cannot tell which function {wrapped.__name__}(*args, **kwargs) wraps, to name the task after it: "
            f"it closes over {', '.join(sorted(inner.__name__ for inner in closed_over))}; pass name=, "
            "or decorate the wrapper with functools.wraps(...)"
        )
    return f"{wrapped.__module__}.{wrapped.__qualname__}"


def wrapped_function(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function under a task's decorators: ``__wrapped__`` (``functools.wraps``) followed to
    its end, and a wrapper without it that takes only ``(*args, **kwargs)`` and closes over
    one function (the how-to's ``new_func``) taken for that function. Every task made by one
    such decorator then has a name, and a ``__name__``, of its own."""
    seen: set[int] = set()
    while id(func) not in seen:  # a function may close over itself (a recursive one)
        seen.add(id(func))
        func = inspect.unwrap(func)
        closed_over = _functions_a_wrapper_closes_over(func)
        if len(closed_over) != 1:
            return func
        func = closed_over[0]
    return func


def _functions_a_wrapper_closes_over(func: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The functions ``func`` closes over, if it takes only ``(*args, **kwargs)``: a task of
    its own takes the arguments it needs, a wrapper passes them on."""
    code = getattr(func, "__code__", None)
    if not inspect.isfunction(func) or code is None or code.co_argcount or code.co_kwonlyargcount:
        return []
    if code.co_flags & PASS_THROUGH != PASS_THROUGH:
        return []
    contents = []
    for cell in func.__closure__ or ():
        with contextlib.suppress(ValueError):  # a cell not yet filled
            contents.append(cell.cell_contents)
    return [inner for inner in contents if inspect.isfunction(inner)]


PASS_THROUGH = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


class JobDescription:
    """The jobs a ``Task.configure(...)`` describes; ``defer`` stores one of them."""

    def __init__(
        self,
        task: Task,
        *,
        lock: str | None,
        queue: str,
        schedule: tuple[datetime.datetime | None, Mapping[str, float] | None],
        connection: Any,
        priority: int = DEFAULT_PRIORITY,
        queueing_lock: str | None = None,
    ) -> None:
        self.task = task
        self.lock = lock
        self.queue = queue
        self.priority = priority
        self.queueing_lock = queueing_lock
        self.scheduled_at, self.schedule_in = schedule
        self.connection = connection

    def defer(self, *args: Any, **kwargs: Any) -> int:
        """Stores one job with these arguments and returns its id.

        >>> job_description = write_alphabet.configure(lock="/tmp/alphabet.txt")
        >>> job_description.defer("a")
        """
        job = self.new_job(args, kwargs)
        try:
            job_id = self.task.store.defer_job(job, connection=self.connection)
        except UnserialisableArgumentError:
            self._name_unserialisable_argument([(args, kwargs)])
            raise
        except AlreadyEnqueued as refused:
            _debug("job_already_enqueued", task_name=job.task_name, queue=job.queue,
                   queueing_lock=job.queueing_lock, waiting_job_id=refused.job_id)
            raise
        _debug("job_deferred", job_id=job_id, task_name=job.task_name, queue=job.queue, lock=job.lock)
        return job_id

    def defer_many(self, calls: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[int]:
        """Stores one job per call in one round trip and returns their ids, in order.

        A mapping is a call's keyword arguments, a list or tuple its positional arguments.
        If any call is refused, none is stored. With a queueing lock, only one call can be
        stored (one todo job per queueing lock): more raise ``AlreadyEnqueued`` naming them.

        >>> write_alphabet.configure(lock="/tmp/alphabet.txt").defer_many([["a"], ["b"], {"floor": "c"}])
        """
        split_calls = [_split_call(call, position) for position, call in enumerate(calls, start=1)]
        if not split_calls:
            return []
        try:
            # One NewJob for all: the calls differ only in their arguments.
            job_ids = self.task.store.defer_calls(self.new_job((), {}), split_calls, connection=self.connection)
        except UnserialisableArgumentError:
            self._name_unserialisable_argument(split_calls)
            raise
        except AlreadyEnqueued as refused:
            _debug("job_already_enqueued", task_name=self.task.name, queue=self.queue,
                   queueing_lock=self.queueing_lock, waiting_job_id=refused.job_id, job_count=len(split_calls))
            raise
        _debug("jobs_deferred", job_count=len(job_ids), task_name=self.task.name, queue=self.queue, lock=self.lock)
        return job_ids

    async def defer_async(self, *args: Any, **kwargs: Any) -> int:
        """``defer``, awaited from an asyncio app without blocking its event loop.

        >>> await write_alphabet.configure(lock="/tmp/alphabet.txt").defer_async("a")
        """
        self._refuse_a_connection("defer_async")
        job = self.new_job(args, kwargs)
        try:
            job_id = await self.task.store.defer_job_async(job)
        except UnserialisableArgumentError:
            self._name_unserialisable_argument([(args, kwargs)])
            raise
        _debug("job_deferred", job_id=job_id, task_name=job.task_name, queue=job.queue, lock=job.lock)
        return job_id

    async def defer_many_async(self, calls: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[int]:
        """``defer_many``, awaited from an asyncio app without blocking its event loop."""
        self._refuse_a_connection("defer_many_async")
        split_calls = [_split_call(call, position) for position, call in enumerate(calls, start=1)]
        if not split_calls:
            return []
        try:
            job_ids = await self.task.store.defer_calls_async(self.new_job((), {}), split_calls)
        except UnserialisableArgumentError:
            self._name_unserialisable_argument(split_calls)
            raise
        _debug("jobs_deferred", job_count=len(job_ids), task_name=self.task.name, queue=self.queue, lock=self.lock)
        return job_ids

    def _refuse_a_connection(self, method: str) -> None:
        if self.connection is not None:
            raise ConfigurationError(
                f"{method} cannot join the transaction of a connection= (a psycopg2 connection is not an "
                "asyncio one); call defer() in that transaction's thread, or configure without connection="
            )

    def _name_unserialisable_argument(self, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]]) -> None:
        # Both stores check the arguments before inserting anything and refuse what a job
        # cannot carry in the task's name; here the refusal names the function the user wrote.
        function_name = getattr(self.task, "__name__", self.task.name)
        for args, kwargs in calls:
            new_jobs.refuse_unstorable_arguments(function_name, args, kwargs)

    def new_job(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> NewJob:
        """The job a defer of these arguments stores: this description's queue, lock, schedule,
        priority and queueing lock, and the task's retry limit. A periodic task's tick is built
        here too (``cabbage.periodic.tick_job``), so a tick's job is any defer's."""
        return NewJob(
            queue=self.queue,
            task_name=self.task.name,
            args=tuple(args),
            kwargs=kwargs,
            lock=self.lock,
            scheduled_at=self.scheduled_at,
            schedule_in=self.schedule_in,
            max_attempts=self.task.retry_policy.max_attempts,
            priority=self.priority,
            queueing_lock=self.queueing_lock,
        )


def _split_call(call: Mapping[str, Any] | Sequence[Any], position: int) -> tuple[Sequence[Any], Mapping[str, Any]]:
    # Lists and tuples first: they are the common call, and isinstance(call, typing.Mapping)
    # goes through the ABC machinery, a tenth of a 100,000-call defer_many.
    if isinstance(call, (list, tuple)):
        return call, {}
    if isinstance(call, Mapping):
        if not all(isinstance(name, str) for name in call):
            raise ConfigurationError(f"call {position} of defer_many has a keyword argument name that is not a str: {list(call)!r}")
        return (), call
    raise ConfigurationError(
        f"call {position} of defer_many is a {type(call).__name__}; "
        "pass a list or tuple of positional arguments, or a dict of keyword arguments"
    )


# -- options -------------------------------------------------------------------------------------


def _check_queue(queue: str) -> str:
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"queue must be a non-empty string, got {queue!r}")
    return new_jobs.check_text("queue", queue)


def _check_lock(lock: str | None) -> str | None:
    if lock is None:
        return None
    if not isinstance(lock, str):
        raise ConfigurationError(
            f"lock must be a string naming the shared resource, got {lock!r} ({type(lock).__name__}); pass str(...)"
        )
    return new_jobs.check_text("lock", lock)


def _check_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ConfigurationError(f"timeout must be a number of seconds > 0, got {timeout_s!r}")
    return float(timeout_s)
