"""TaskManager: the task and periodic registries, the store it defers into, and the ``@task``
and ``@periodic`` decorators."""

from __future__ import annotations

from typing import Any, Callable, Iterable, overload

from cabbage import periodic as periodic_schedules
from cabbage.exceptions import PeriodicScheduleError, TaskAlreadyRegistered, TaskNotFound
from cabbage.jobs import DEFAULT_PRIORITY
from cabbage.middleware import Middleware, MiddlewareChain
from cabbage.retry import RetrySpec, make_retry_policy
from cabbage.store import JobStore
from cabbage.tasks import Task, default_task_name


class TaskManager:
    """The app: declares tasks and holds the job store they are deferred into.

    The store is PostgreSQL by default (DSN from ``CABBAGE_DSN``, else libpq's ``PG*``
    variables); it connects on first use, so importing an app opens nothing. ``store_options``
    go to the store class; both stores take ``max_arguments_bytes``, the most a job's
    arguments may take as JSON text (default 1,000,000; a larger job is refused at defer).
    ``middleware``: generator functions run around every attempt of every task, first
    outermost (``cabbage.middleware``); ``@task_manager.middleware`` registers more.

    >>> task_manager = cabbage.TaskManager()
    >>> task_manager = cabbage.TaskManager(max_arguments_bytes=5_000_000)
    >>> task_manager = cabbage.TaskManager(
    ...     store_class=store.load_store_from_path("cabbage.testing.InMemoryJobStore")
    ... )
    """

    def __init__(
        self, store_class: type[JobStore] | None = None, *, middleware: Iterable[Middleware] = (), **store_options: Any
    ) -> None:
        if store_class is None:
            # Imported here so that an app on the in-memory store never loads psycopg2.
            from cabbage.postgres import PostgresJobStore

            store_class = PostgresJobStore
        self.store: JobStore = store_class(**store_options)
        self.tasks: dict[str, Task] = {}
        self.middleware = MiddlewareChain(middleware)
        # (task name, periodic id) -> schedule; the supervisors defer their ticks.
        self.periodic_schedules: dict[tuple[str, str], periodic_schedules.PeriodicSchedule] = {}

    def __repr__(self) -> str:
        return f"<TaskManager {type(self.store).__name__} tasks={len(self.tasks)}>"

    @overload
    def task(self, func: Callable[..., Any]) -> Task: ...

    @overload
    def task(
        self,
        func: None = None,
        *,
        queue: str = "default",
        name: str | None = None,
        retry: RetrySpec = None,
        timeout: float | None = None,
        lock: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        queueing_lock: str | None = None,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        queue: str = "default",
        name: str | None = None,
        retry: RetrySpec = None,
        timeout: float | None = None,
        lock: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        queueing_lock: str | None = None,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Declares a task; usable bare (``@task_manager.task``) or with options.

        ``queue``: which workers run it; ``name``: how jobs refer to it (default
        ``module.qualname`` of the function, under any decorator that wraps it: see
        ``cabbage.tasks.wrapped_function``); ``retry``: a number of retries, True (no limit) or a
        ``RetryPolicy``; ``timeout``: seconds one attempt may run before the supervisor kills
        its worker; ``lock``: the default lock of its jobs; ``priority``: the default priority of
        its jobs (higher claimed first, 0 unless set); ``queueing_lock``: the default queueing
        lock of its jobs (while one of them waits, another defer raises ``AlreadyEnqueued``; a
        periodic task's tick is then skipped).

        >>> @task_manager.task(queue="queue", retry=3, timeout=60)
        ... def write_alphabet(floor): ...
        """
        retry_policy = make_retry_policy(retry)

        def declare(func: Callable[..., Any]) -> Task:
            task = Task(
                func,
                store=self.store,
                name=name or default_task_name(func),
                queue=queue,
                retry_policy=retry_policy,
                timeout_s=timeout,
                lock=lock,
                priority=priority,
                queueing_lock=queueing_lock,
            )
            existing = self.tasks.get(task.name)
            if existing is not None:
                raise TaskAlreadyRegistered(
                    f"task name {task.name!r} is already declared (by {existing.func!r}); "
                    "pass name= to tell the two apart"
                )
            self.tasks[task.name] = task
            return task

        return declare if func is None else declare(func)

    def periodic(
        self,
        cron: str,
        *,
        timezone: str = "UTC",
        periodic_id: str = "",
        catch_up: float = periodic_schedules.DEFAULT_CATCH_UP_S,
    ) -> Callable[[Task], Task]:
        """Runs a task on a cron schedule; goes above ``@task_manager.task``.

        ``cron``: 5 fields (minute hour day month weekday), or 6 with the seconds first.
        ``timezone``: an IANA name the expression is read in (default UTC). ``periodic_id``
        tells apart two schedules of one task. Each tick is deferred once as an ordinary job of
        the task, whatever the number of supervisors, on the database clock; a task that takes
        a ``timestamp`` keyword gets the tick's time (epoch seconds). A tick missed while no
        supervisor ran is deferred late if it is at most ``catch_up`` seconds old, else skipped
        and logged (``periodic_ticks_skipped``).

        >>> @task_manager.periodic(cron="*/5 * * * *")
        ... @task_manager.task
        ... def clean(timestamp): ...
        """
        # Checked now, so that a bad expression fails at the line that has it.
        periodic_schedules.check_schedule("", cron, timezone=timezone, periodic_id=periodic_id, catch_up=catch_up)

        def declare(task: Task) -> Task:
            if not isinstance(task, Task) or self.tasks.get(task.name) is not task:
                raise PeriodicScheduleError(
                    f"@periodic must go above @task_manager.task of this TaskManager, got {task!r}; "
                    "write @task_manager.periodic(cron=...) on the line above @task_manager.task"
                )
            periodic_schedules.check_task_takes_no_arguments(task)
            schedule = periodic_schedules.check_schedule(
                task.name, cron, timezone=timezone, periodic_id=periodic_id, catch_up=catch_up
            )
            existing = self.periodic_schedules.get(schedule.key)
            if existing is not None:
                raise PeriodicScheduleError(
                    f"task {task.name} already has a schedule with periodic_id {periodic_id!r} ({existing.cron!r}); "
                    "pass periodic_id= to tell the two apart"
                )
            self.periodic_schedules[schedule.key] = schedule
            return task

        return declare

    def get_task(self, name: str) -> Task:
        """The task declared under ``name``; TaskNotFound if this app has none."""
        try:
            return self.tasks[name]
        except KeyError:
            raise TaskNotFound(
                f"task {name!r} is not declared in this app (known: {', '.join(sorted(self.tasks)) or 'none'})"
            ) from None
