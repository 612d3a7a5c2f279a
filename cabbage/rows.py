"""Rows and parameters: what the PostgreSQL store sends for a NewJob, and the records a row becomes.

No I/O and no driver import: the admin queries map their rows here too. A cursor is anything
with ``description`` and ``fetchall()`` (DB-API).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Protocol, Sequence

from cabbage import new_jobs, schedules
from cabbage.jobs import Attempt, AttemptOutcome, Job, JobError, NewJob, ReclaimedJob, Status
from cabbage.periodic import DeclaredSchedule, PeriodicOverview, PeriodicSchedule, PeriodicTick, RecordedTick


class Cursor(Protocol):
    """The part of a DB-API cursor the mappings read."""

    @property
    def description(self) -> Any: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


def column_names(cursor: Cursor) -> list[str]:
    return [column[0] for column in cursor.description]


def jobs_from(cursor: Cursor) -> list[Job]:
    columns = column_names(cursor)
    return [job_from_row(dict(zip(columns, row))) for row in cursor.fetchall()]


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A ``cabbage_jobs`` row (by column name) as a Job; a JSON object in ``args`` (a row
    written by another program) counts as keyword arguments."""
    args = row["args"]
    error_type = row["last_error_type"]
    return Job(
        id=row["id"],
        queue=row["queue"],
        task_name=row["task_name"],
        args=tuple(args) if isinstance(args, list) else (),
        kwargs={**(args if isinstance(args, dict) else {}), **row["kwargs"]},
        lock=row["lock"],
        status=Status(row["status"]),
        scheduled_at=row["scheduled_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        worker_id=row["worker_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        last_error=(
            JobError(error_type, row["last_error"] or "", row["last_error_traceback"])
            if error_type is not None
            else None
        ),
        priority=row["priority"],
        queueing_lock=row["queueing_lock"],
        abort_requested_at=row["abort_requested_at"],
        aborted_by=row["aborted_by"],
    )


def attempt_from_row(row: Mapping[str, Any]) -> Attempt:
    """A ``cabbage_attempts`` row (by column name) as an Attempt."""
    error_type = row["error_type"]
    return Attempt(
        job_id=row["job_id"],
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=AttemptOutcome(row["outcome"]),
        error=JobError(error_type, row["error"] or "", row["traceback"]) if error_type is not None else None,
    )


def attempts_from(cursor: Cursor) -> list[Attempt]:
    columns = column_names(cursor)
    return [attempt_from_row(dict(zip(columns, row))) for row in cursor.fetchall()]


def reclaimed_from(cursor: Cursor) -> list[ReclaimedJob]:
    columns = column_names(cursor)
    rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    return [ReclaimedJob(**{**row, "status": Status(row["status"])}) for row in rows]


def defer_parameters(jobs: Sequence[NewJob], max_arguments_bytes: int) -> dict[str, str]:
    """One JSON array per column: the server unpacks them side by side, in input order."""
    new_jobs.check_job_texts(jobs)
    new_jobs.check_options(jobs)
    schedules = [schedule_of(job) for job in jobs]
    args, kwargs = new_jobs.encode_arguments_of_many(
        [job.task_name for job in jobs], [job.args for job in jobs], [job.kwargs for job in jobs], max_arguments_bytes
    )
    return {
        "queues": json.dumps([job.queue for job in jobs]),
        "task_names": json.dumps([job.task_name for job in jobs]),
        "args": args,
        "kwargs": kwargs,
        "locks": json.dumps([job.lock for job in jobs]),
        "scheduled_at": json.dumps([scheduled_at for scheduled_at, _, _ in schedules]),
        "months": json.dumps([months for _, months, _ in schedules]),
        "seconds": json.dumps([seconds for _, _, seconds in schedules]),
        "max_attempts": json.dumps([job.max_attempts for job in jobs]),
        "priorities": json.dumps([int(job.priority) for job in jobs]),
        "queueing_locks": json.dumps([job.queueing_lock for job in jobs]),
    }


def defer_one_parameters(job: NewJob, max_arguments_bytes: int) -> dict[str, Any]:
    new_jobs.check_job_texts([job])
    new_jobs.check_options([job])
    scheduled_at, months, seconds = schedule_of(job)
    args, kwargs = new_jobs.encode_job_arguments(job, max_arguments_bytes)
    return {
        "queue": job.queue,
        "task_name": job.task_name,
        "args": args,
        "kwargs": kwargs,
        "lock": job.lock,
        "scheduled_at": scheduled_at,
        "months": months,
        "seconds": seconds,
        "max_attempts": job.max_attempts,
        "priority": int(job.priority),
        "queueing_lock": job.queueing_lock,
    }


def schedule_of(job: NewJob) -> tuple[str | None, int | None, float | None]:
    """(scheduled_at as ISO 8601, months, seconds): an absolute time, or a delay that the
    database adds to its own clock, calendar months first."""
    scheduled_at = schedules.aware_scheduled_at(job.scheduled_at)
    if scheduled_at is not None:
        return scheduled_at.isoformat(), None, None
    if job.schedule_in is None:
        return None, None, None
    # The database adds the delay to its own clock; this host's clock is close enough to refuse
    # one that would end outside the schedule range (the range keeps a day of margin).
    schedules.due_at(job.schedule_in, schedules.now_utc())
    months, seconds = schedules.delay_of(job.schedule_in) or (0, 0.0)
    return None, months, seconds


def defer_calls_parameters(
    job: NewJob, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], max_arguments_bytes: int
) -> dict[str, Any]:
    """The parameters of ``defer_calls``: one job's options, and an array of each call's arguments."""
    new_jobs.check_job_texts([job])
    new_jobs.check_options([job])
    scheduled_at, months, seconds = schedule_of(job)
    # The calls' arguments are refused in the job's name.
    args, kwargs = new_jobs.encode_arguments_of_many(
        [job.task_name] * len(calls), [args for args, _ in calls], [kwargs for _, kwargs in calls], max_arguments_bytes
    )
    return {
        "queue": job.queue,
        "task_name": job.task_name,
        "args": args,
        "kwargs": kwargs,
        "lock": job.lock,
        "scheduled_at": scheduled_at,
        "months": months,
        "seconds": seconds,
        "max_attempts": job.max_attempts,
        "priority": int(job.priority),
        "queueing_lock": job.queueing_lock,
    }


# -- periodic tasks --------------------------------------------------------------------------------


def schedules_parameter(schedules: Sequence[PeriodicSchedule]) -> str:
    """The JSON array ``declare_periodic_schedules`` unpacks, one object of columns per schedule."""
    return json.dumps([dataclasses.asdict(schedule) for schedule in schedules])


def ticks_parameter(ticks: Sequence[PeriodicTick]) -> str:
    """The JSON array ``record_periodic_ticks`` unpacks: each tick's key, and its skipped count."""
    return json.dumps([{**_tick_key_object(tick), "skipped_ticks": tick.skipped_ticks} for tick in ticks])


def tick_jobs_parameter(recorded: Sequence[RecordedTick]) -> str:
    """The JSON array ``record_periodic_tick_jobs`` unpacks: each tick's key, job and skipped
    count."""
    return json.dumps(
        [{**_tick_key_object(tick), "job_id": tick.job_id, "skipped_ticks": tick.skipped_ticks} for tick in recorded]
    )


def _tick_key_object(tick: PeriodicTick | RecordedTick) -> dict[str, str]:
    return {"task_name": tick.task_name, "periodic_id": tick.periodic_id, "tick_at": tick.tick_at.isoformat()}


def recorded_ticks_from(cursor: Cursor) -> list[RecordedTick]:
    columns = column_names(cursor)
    return [RecordedTick(**dict(zip(columns, row))) for row in cursor.fetchall()]


def periodic_overview_from(cursor: Cursor) -> PeriodicOverview:
    """The rows of ``list_periodic_schedules`` as the clock and the declared schedules."""
    columns = column_names(cursor)
    rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    now = rows[0]["database_now"]
    return PeriodicOverview(now, [_declared_from(row, now) for row in rows if row["task_name"] is not None])


def _declared_from(row: Mapping[str, Any], now: Any) -> DeclaredSchedule:
    schedule = PeriodicSchedule(row["task_name"], row["cron"], row["timezone"], row["periodic_id"], row["catch_up_s"])
    last_tick = None
    if row["last_tick_at"] is not None:
        last_tick = RecordedTick(
            schedule.task_name, schedule.periodic_id, row["last_tick_at"], row["last_job_id"],
            row["last_skipped_ticks"], row["last_recorded_at"],
        )  # fmt: skip
    return DeclaredSchedule.of(schedule, row["first_declared_at"], row["last_declared_at"], last_tick, now)
