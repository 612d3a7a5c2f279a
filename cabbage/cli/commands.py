"""What each `cabbage` sub-command does, given its parsed options, the DSN and where to print.

Each returns an exit status from ``exit_codes``; cabbage errors propagate to ``main``, which
prints them on one line. Modules with heavier imports (the store, Flask) load on use only.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import socket
import sys
from typing import Callable

import setproctitle

from cabbage.admin import TODO_STATES, Admin, JobDetail, JobFilter, counts_by_queue, todo_counts_by_queue
from cabbage.admin.operations import RATE_WINDOW_S
from cabbage.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cabbage.cli.output import Output
from cabbage.cli.parser import DEFAULT_QUEUE
from cabbage.durations import format_duration
from cabbage.exceptions import ConfigurationError, DatabaseUnavailable, SchemaError
from cabbage.jobs import DEFAULT_PRIORITY, FINISHED_STATUSES, NewJob, Status
from cabbage.new_jobs import DEFAULT_MAX_ARGUMENTS_BYTES
from cabbage.periodic import DeclaredSchedule, declared_as_in_app
from cabbage.tasks import Task

TOKEN_VARIABLE = "CABBAGE_WEB_TOKEN"
WEB_TITLE = "cabbage web: starting"


def short_time(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def describe_arguments(job: JobDetail) -> str:
    if job.args is None or job.kwargs is None:
        return job.arguments_preview or ""  # too long to show whole: the start, marked as cut
    shown = [json.dumps(arg, ensure_ascii=False) for arg in job.args]
    shown += [f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in job.kwargs.items()]
    return ", ".join(shown)


# -- schema and defer ---------------------------------------------------------------------------


def schema_apply(arguments: argparse.Namespace, dsn: str, output: Output) -> int:
    from cabbage.schema import apply_schema

    version = apply_schema(dsn)
    output.result({"version": version}, f"schema is at version {version}")
    return EXIT_OK


def schema_check(arguments: argparse.Namespace, dsn: str, output: Output) -> int:
    from cabbage.schema import check_schema

    check_schema(dsn)  # raises SchemaError, which names the command that fixes it
    output.result({"current": True}, "schema is current")
    return EXIT_OK


def schema_dump(arguments: argparse.Namespace, dsn: str, output: Output) -> int:
    from cabbage.schema import dump_schema

    output.stream.write(dump_schema(dsn))  # DDL as it is: no escaping, no JSON
    return EXIT_OK


def defer(arguments: argparse.Namespace, dsn: str, output: Output) -> int:
    from cabbage.postgres import PostgresJobStore

    task = declared_task(arguments.app, arguments.task_name) if arguments.app else None
    job = job_to_defer(arguments, task)
    # With --app, the app's own limit on arguments holds too.
    store = PostgresJobStore(dsn, max_arguments_bytes=task.store.max_arguments_bytes if task else DEFAULT_MAX_ARGUMENTS_BYTES)
    try:
        job_id = store.defer_job(job)
    finally:
        store.close()
    output.result({"job_id": job_id}, f"deferred job {job_id}: task {job.task_name} on queue {job.queue}")
    return EXIT_OK


def job_to_defer(arguments: argparse.Namespace, task: Task | None) -> NewJob:
    """The job ``cabbage defer`` inserts: options left out are the task's with --app, else the defaults."""
    queue, lock, max_attempts = (task.queue, task.lock, task.retry_policy.max_attempts) if task else (DEFAULT_QUEUE, None, 1)
    args, kwargs = arguments.task_arguments
    return NewJob(
        queue=arguments.queue or queue,
        task_name=arguments.task_name,
        args=args,
        kwargs=kwargs,
        lock=arguments.lock or lock,
        # Absent, not None: None is --max-attempts unlimited.
        max_attempts=vars(arguments).get("max_attempts", max_attempts),
        scheduled_at=arguments.schedule_at,
        schedule_in={"seconds": arguments.schedule_in} if arguments.schedule_in is not None else None,
        priority=arguments.priority if arguments.priority is not None else (task.priority if task else DEFAULT_PRIORITY),
        queueing_lock=arguments.queueing_lock or (task.queueing_lock if task else None),
    )


def declared_task(app: str, task_name: str) -> Task:
    """The task ``task_name`` of the app ``--app`` names; TaskNotFound lists the ones it declares."""
    from cabbage.apps import import_task_manager

    # As `python -m` would, and as cabbage-supervisor does: the working directory first.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _, task_manager = import_task_manager(app)
    return task_manager.get_task(task_name)


# -- jobs ---------------------------------------------------------------------------------------


def jobs_list(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    job_filter = JobFilter.parse(arguments.status, arguments.queue, arguments.task_name, arguments.lock)
    page = admin.list_jobs(job_filter, limit=arguments.limit, before_id=arguments.before)
    if output.as_json:
        output.json({"jobs": page.jobs, "next_cursor": page.next_cursor})
        return EXIT_OK
    headers = ["ID", "STATE", "PRIORITY", "QUEUE", "TASK", "LOCK", "QUEUEING LOCK", "ATTEMPTS", "CREATED (UTC)",
               "LAST ERROR"]
    rows = [
        [job.id, job.state_text, job.priority, job.queue, job.task_name, job.lock, job.queueing_lock, job.attempts,
         short_time(job.created_at), job.last_error]
        for job in page.jobs
    ]
    output.table(headers, rows, empty="no job matches")
    if page.next_cursor is not None:
        output.message(f"(more: add --before {page.next_cursor})")
    return EXIT_OK


def jobs_show(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    job = admin.get_job(arguments.job_id)
    if output.as_json:
        output.json(job)
        return EXIT_OK
    error = job.last_error
    output.fields(
        [
            ("id", job.id),
            ("task", job.task_name),
            ("queue", job.queue),
            ("lock", job.lock),
            ("queueing lock", job.queueing_lock),
            ("priority", job.priority),
            ("status", job.status.value),
            ("state", job.state_text),
            ("args", describe_arguments(job) or "(none)"),
            ("attempts", f"{job.attempts} of {job.max_attempts or 'unlimited'}"),
            ("worker", job.worker_id),
            ("created at", job.created_at.isoformat()),
            ("scheduled at", job.scheduled_at.isoformat()),
            ("started at", job.started_at.isoformat() if job.started_at else None),
            ("finished at", job.finished_at.isoformat() if job.finished_at else None),
            ("last error", str(error) if error else None),
            ("traceback", error.traceback if error else None),
        ]
    )
    if job.attempt_history:
        output.message(f"\nattempts (the last {len(job.attempt_history)} of {job.attempts}):")
        output.table(
            ["ATTEMPT", "OUTCOME", "WORKER", "STARTED (UTC)", "FINISHED (UTC)", "DURATION", "ERROR"],
            [
                [attempt.attempt, attempt.outcome.value, attempt.worker_id, short_time(attempt.started_at),
                 short_time(attempt.finished_at),
                 format_duration((attempt.finished_at - attempt.started_at).total_seconds()), attempt.error]
                for attempt in job.attempt_history
            ],
            empty="no attempt",
        )
    return EXIT_OK


def jobs_retry(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    if arguments.job_ids:
        changed = admin.retry_jobs(arguments.job_ids)
    else:
        changed = admin.retry_matching(Status(arguments.status), arguments.task_name)
    listed = ", ".join(map(str, changed)) or "none matched"
    output.result({"retried": changed}, f"retried {len(changed)} job(s): {listed}")
    return EXIT_OK


def jobs_cancel(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    changed = admin.cancel_jobs(arguments.job_ids)
    output.result({"cancelled": changed}, f"cancelled {len(changed)} job(s): {', '.join(map(str, changed))}")
    return EXIT_OK


def jobs_abort(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    aborted_by = arguments.aborted_by if arguments.aborted_by is not None else _operator_name()
    result = admin.abort_jobs(arguments.job_ids, aborted_by)
    parts = []
    if result.cancelled:
        parts.append(f"cancelled {len(result.cancelled)} waiting job(s): {', '.join(map(str, result.cancelled))}")
    if result.requested:
        parts.append(f"asked the workers of {len(result.requested)} running job(s) to stop them: "
                     f"{', '.join(map(str, result.requested))}")  # fmt: skip
    output.result({"cancelled": result.cancelled, "abort_requested": result.requested, "aborted_by": aborted_by},
                  "; ".join(parts))  # fmt: skip
    return EXIT_OK


def _operator_name() -> str:
    """Who runs the command, as user@host, for an abort's --by default."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no such uid in the passwords file (containers)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def jobs_prune(arguments: argparse.Namespace, dsn: str, output: Output) -> int:
    from cabbage.postgres import PostgresJobStore
    from cabbage.retention import prune_in_batches

    statuses = sorted({Status(status) for status in arguments.statuses or FINISHED_STATUSES})
    store = PostgresJobStore(dsn)
    try:
        deleted = prune_in_batches(store, arguments.older_than, statuses, arguments.batch_size)
    finally:
        store.close()
    age = format_duration(arguments.older_than)
    names = ", ".join(status.value for status in statuses)
    output.result({"deleted": deleted}, f"pruned {deleted} job(s) finished ({names}) more than {age} ago")
    return EXIT_OK


# -- periodic -----------------------------------------------------------------------------------


def periodic_list(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    overview = admin.list_periodic_schedules()
    schedules = overview.schedules
    if arguments.app:
        from cabbage.apps import import_task_manager

        # As `python -m` would, and as cabbage-supervisor does: the working directory first.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        _, task_manager = import_task_manager(arguments.app)
        stored = overview.by_key()
        schedules = [
            declared_as_in_app(schedule, stored.get(schedule.key), overview.now)
            for schedule in task_manager.periodic_schedules.values()
        ]
    if output.as_json:
        output.json({"database_now": overview.now, "schedules": schedules})
        return EXIT_OK
    headers = ["TASK", "PERIODIC ID", "CRON", "TIMEZONE", "LAST TICK (UTC)", "JOB", "NEXT TICK (UTC)", "DECLARED"]
    rows = [
        [declared.task_name, declared.periodic_id or None, declared.cron, declared.timezone, describe_last_tick(declared),
         declared.last_tick.job_id if declared.last_tick else None, short_time(declared.next_tick_at),
         f"{format_duration((overview.now - declared.last_declared_at).total_seconds())} ago" if declared.last_declared_at else "never"]
        for declared in schedules
    ]  # fmt: skip
    output.table(headers, rows, empty="no periodic schedule" + ("" if arguments.app else " was declared by a supervisor"))
    return EXIT_OK


def describe_last_tick(declared: DeclaredSchedule) -> str | None:
    tick = declared.last_tick
    if tick is None:
        return None
    when = short_time(tick.tick_at) or ""
    return when if tick.skipped_ticks is None else f"{when} ({tick.skipped_ticks} skipped)"


# -- workers, stats, health ---------------------------------------------------------------------


def workers(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    found = admin.list_workers()
    if output.as_json:
        output.json({"workers": found})
        return EXIT_OK
    headers = ["WORKER", "HOST", "PID", "HEARTBEAT AGE", "CURRENT JOB", "TASK", "RUNNING FOR"]
    rows = [
        [worker.worker_id, worker.hostname, worker.pid, format_duration(worker.heartbeat_age_s),
         worker.current_job_id, worker.current_task_name,
         format_duration(worker.current_job_run_s) if worker.current_job_run_s is not None else None]
        for worker in found
    ]
    output.table(headers, rows, empty="no worker is registered")
    return EXIT_OK


def stats(arguments: argparse.Namespace, admin: Admin, output: Output) -> int:
    counts = admin.count_jobs()
    todo = admin.count_todo_jobs()
    waiting = admin.oldest_waiting_jobs()
    jobs_per_minute = admin.jobs_per_minute()
    if output.as_json:
        output.json({"counts": counts, "todo": todo, "oldest_waiting": waiting, "jobs_per_minute": jobs_per_minute})
        return EXIT_OK
    # Todo is told apart: waiting (due, claimable), scheduled (not due yet), behind a lock.
    statuses = [status for status in Status if status is not Status.TODO]
    oldest = {job.queue: job for job in waiting}
    todo_by_queue = todo_counts_by_queue(todo)
    no_todo = dict.fromkeys(TODO_STATES, 0)
    headers = (["QUEUE"] + [state.value.replace("_", " ").upper() for state in TODO_STATES]
               + [status.value.upper() for status in statuses] + ["OLDEST WAITING", "JOB"])
    rows = [
        [queue, *(todo_by_queue.get(queue, no_todo)[state] for state in TODO_STATES),
         *(numbers[status] for status in statuses),
         format_duration(oldest[queue].waiting_s) if queue in oldest else None,
         oldest[queue].job_id if queue in oldest else None]
        for queue, numbers in counts_by_queue(counts).items()
    ]
    output.table(headers, rows, empty="no jobs")
    output.message(f"jobs per minute (last {format_duration(RATE_WINDOW_S)}): {jobs_per_minute}")
    return EXIT_OK


def healthcheck(arguments: argparse.Namespace, dsn: str, output: Output) -> int:
    from cabbage.schema import check_schema

    try:
        check_schema(dsn)
        admin = Admin.connect(dsn)
        try:
            admin.database_now()
        finally:
            admin.close()
    except (DatabaseUnavailable, SchemaError) as exc:
        output.result({"healthy": False, "reason": str(exc)}, f"unhealthy: {exc}")
        return EXIT_FAILED
    output.result({"healthy": True}, "healthy: the database answers and the schema is current")
    return EXIT_OK


def web(arguments: argparse.Namespace, dsn: str, output: Output) -> int:
    # At once, before Flask loads: the command line may hold the DSN and its password (--dsn),
    # and a server shows its title in ps for as long as it runs.
    setproctitle.setproctitle(WEB_TITLE)
    try:
        from cabbage.web.server import serve
    except ImportError as exc:
        raise ConfigurationError(f"cabbage web needs Flask and prometheus_client: pip install 'cabbage-queue[web]' ({exc})") from None
    token = os.environ.get(TOKEN_VARIABLE)  # a blank one is refused, not read as "no token"
    serve(dsn, arguments.host, arguments.port, token=token, trust_proxy=arguments.trust_proxy, pool_size=arguments.pool_size)
    return EXIT_OK


# Commands that work through an Admin connection get it from main; the others take the DSN.
ADMIN_COMMANDS: dict[str, Callable[[argparse.Namespace, Admin, Output], int]] = {
    "jobs_list": jobs_list,
    "jobs_show": jobs_show,
    "jobs_retry": jobs_retry,
    "jobs_cancel": jobs_cancel,
    "jobs_abort": jobs_abort,
    "periodic_list": periodic_list,
    "stats": stats,
    "workers": workers,
}
DSN_COMMANDS: dict[str, Callable[[argparse.Namespace, str, Output], int]] = {
    "schema_apply": schema_apply,
    "schema_check": schema_check,
    "schema_dump": schema_dump,
    "defer": defer,
    "jobs_prune": jobs_prune,
    "healthcheck": healthcheck,
    "web": web,
}

# Commands whose queries need the schema: when one fails, main checks the schema's version, so
# that a missing or older schema is told as the command that fixes it rather than as SQL.
NEEDS_SCHEMA = frozenset(ADMIN_COMMANDS) | {"defer", "jobs_prune"}

__all__ = ["ADMIN_COMMANDS", "DSN_COMMANDS", "NEEDS_SCHEMA"]
