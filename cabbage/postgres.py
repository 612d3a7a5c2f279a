"""PostgresJobStore: the JobStore contract on PostgreSQL, running the named queries of cabbage/sql.

The database keeps the invariants (ARCHITECTURE section 2): the triggers keep each lock's line,
the partial indexes make claims cheap, and every state change names the attempt's owner. This
module only picks the query, passes named parameters, and maps rows to ``Job`` records.

Connections are opened lazily, one per store and process, in autocommit mode. After ``fork`` a
store notices that its connection belongs to another process and opens its own; the inherited
one is dropped, never closed, because closing it would end the parent's session. A lost
connection raises ``DatabaseUnavailable`` and the next call reconnects. No psycopg2 error leaves
this module.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import time
import weakref
from typing import Any, Collection, Iterator, Mapping, Sequence

import psycopg2
import psycopg2.extensions

from cabbage import dsn as dsn_module
from cabbage import new_jobs, schedules
from cabbage import schema
from cabbage.exceptions import DatabaseUnavailable, StoreError
from cabbage.jobs import Job, JobError, NewJob, Outcome, ReclaimedJob, Status, WorkerInfo
from cabbage.sql import queries
from cabbage.store import JobStore

NOTIFY_CHANNEL = "cabbage_jobs"
# SQLSTATE classes that mean the session is gone: connection exceptions, and the server
# shutting down or terminating the backend (pg_terminate_backend is 57P01).
_SESSION_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03")


class _WakePipe:
    """The self-pipe that ``interrupt_wait`` writes to and ``wait_for_jobs`` selects on."""

    def __init__(self) -> None:
        self.reader, self.writer = os.pipe()
        os.set_blocking(self.reader, False)
        os.set_blocking(self.writer, False)

    def wake(self) -> None:
        try:
            os.write(self.writer, b"\0")
        except (BlockingIOError, OSError):
            pass  # full: a wake-up is already pending; closed: the store is gone

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.reader, 4096):
                pass

    def close(self) -> None:
        for fd in (self.reader, self.writer):
            with contextlib.suppress(OSError):
                os.close(fd)


_stores: "weakref.WeakSet[PostgresJobStore]" = weakref.WeakSet()


def _renew_wake_pipes_in_child() -> None:
    # Right after fork, while the inherited descriptors are surely still the pipe's: a child
    # waking its copy would wake the parent's wait too.
    for store in list(_stores):
        store._wake.close()
        store._wake = _WakePipe()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_wake_pipes_in_child)


class PostgresJobStore(JobStore):
    """The job store on PostgreSQL. Constructing one opens nothing.

    ``dsn`` is a libpq URI or keyword string; None means ``$CABBAGE_DSN``, else libpq's PG*
    variables.

    >>> store = PostgresJobStore("postgresql://app@db/app")
    >>> store.check_schema()    # SchemaError: run 'cabbage schema apply'
    """

    def __init__(self, dsn: str | None = None, *, synchronous_commit: bool = True) -> None:
        self.dsn = dsn_module.resolve_dsn(dsn)
        self.synchronous_commit = synchronous_commit
        self._connection: psycopg2.extensions.connection | None = None
        self._connection_pid: int | None = None
        self._listening = False
        self._worker_statements_prepared = False
        self._wake = _WakePipe()
        _stores.add(self)

    def __repr__(self) -> str:
        return f"PostgresJobStore({dsn_module.describe(self.dsn)!r})"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._wake.close()

    # -- connection ------------------------------------------------------------------------------

    def _connect(self) -> psycopg2.extensions.connection:
        if self._connection is not None and self._connection_pid != os.getpid():
            self._forget_connection()
        if self._connection is None or self._connection.closed:
            self._connection = dsn_module.connect(self.dsn)
            self._connection_pid = os.getpid()
            self._listening = False
            self._worker_statements_prepared = False
        return self._connection

    def _forget_connection(self) -> None:
        # Not close(): on an inherited connection it would end the parent's session. Dropping
        # the reference is enough: psycopg2 (2.8+) closes a connection on garbage collection
        # only in the process that opened it.
        self._connection = None
        self._connection_pid = None
        self._listening = False
        self._worker_statements_prepared = False

    @contextlib.contextmanager
    def _cursor(self, connection: Any = None) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on ``connection`` (the caller's) or on the store's own, with psycopg2
        errors turned into cabbage ones."""
        own = connection is None
        with self._errors_translated(own):
            with (self._connect() if own else connection).cursor() as cursor:
                yield cursor

    @contextlib.contextmanager
    def _worker_cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on the store's own connection, where the claim and the finish are prepared."""
        with self._cursor() as cursor:
            if not self._worker_statements_prepared:
                cursor.execute(queries["prepare_worker_statements"])
                self._worker_statements_prepared = True
            yield cursor

    @contextlib.contextmanager
    def _errors_translated(self, own_connection: bool = True) -> Iterator[None]:
        try:
            yield
        except psycopg2.Error as exc:
            reason = dsn_module.reason_of(exc, self.dsn)
            if _is_session_lost(exc):
                if not own_connection:
                    raise DatabaseUnavailable(f"the caller's connection was lost: {reason}") from None
                self.close()  # the next call reconnects
                # from None: the chained psycopg2 error would print libpq's unscrubbed text.
                raise DatabaseUnavailable(f"lost the connection to {dsn_module.describe(self.dsn)}: {reason}") from None
            raise StoreError(f"the database refused a cabbage query: {reason}") from None

    def close(self) -> None:
        connection, pid = self._connection, self._connection_pid
        self._forget_connection()
        if connection is not None and pid == os.getpid():
            with contextlib.suppress(psycopg2.Error):
                connection.close()

    def open_sibling(self) -> "PostgresJobStore":
        return PostgresJobStore(self.dsn, synchronous_commit=self.synchronous_commit)

    def check_schema(self) -> None:
        with self._errors_translated():
            version = schema.read_schema_version(self._connect())
        schema.check_schema_version(version)

    # -- deferring -------------------------------------------------------------------------------

    def defer_jobs(self, jobs: Sequence[NewJob], connection: Any = None) -> list[int]:
        if not jobs:
            return []
        if len(jobs) == 1:
            return [self.defer_job(jobs[0], connection)]
        with self._cursor(connection) as cursor:
            cursor.execute(queries["defer_jobs"], _defer_parameters(jobs))
            return [job_id for (job_id,) in cursor.fetchall()]

    def defer_job(self, job: NewJob, connection: Any = None) -> int:
        parameters = _defer_one_parameters(job)
        with self._cursor(connection) as cursor:
            cursor.execute(queries["defer_job"], parameters)
            (job_id,) = cursor.fetchone()
        return job_id

    def defer_calls(
        self, job: NewJob, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], connection: Any = None
    ) -> list[int]:
        if not calls:
            return []
        scheduled_at, months, seconds = _schedule_of(job)
        jobs = [job] * len(calls)  # the calls' arguments are refused in the job's name
        parameters = {
            "queue": job.queue,
            "task_name": job.task_name,
            "args": new_jobs.encode_arguments_of_many(jobs, [args for args, _ in calls]),
            "kwargs": new_jobs.encode_arguments_of_many(jobs, [new_jobs.as_dict(kwargs) for _, kwargs in calls]),
            "lock": job.lock,
            "scheduled_at": scheduled_at,
            "months": months,
            "seconds": seconds,
            "max_attempts": job.max_attempts,
        }
        with self._cursor(connection) as cursor:
            cursor.execute(queries["defer_calls"], parameters)
            return [job_id for (job_id,) in cursor.fetchall()]

    # -- claiming and finishing ------------------------------------------------------------------

    def claim_jobs(self, worker_id: int, queues: Sequence[str] | None, limit: int = 1) -> list[Job]:
        if limit <= 0:
            return []
        parameters = {"worker_id": worker_id, "queues": None if queues is None else list(queues), "limit": limit}
        with self._worker_cursor() as cursor:
            cursor.execute(self._worker_write(queries["claim_jobs"]), parameters)
            claimed = _jobs_from(cursor)
        if claimed:
            self._drop_notifications()
        return claimed

    def _drop_notifications(self) -> None:
        # After a claim that found jobs the worker claims again before it waits, so the
        # wake-ups received so far are not needed: drop them, or a busy worker's list of
        # notifications grows without end.
        if self._listening and self._connection is not None:
            del self._connection.notifies[:]

    def start_job(self, job_id: int, worker_id: int) -> Job | None:
        with self._cursor() as cursor:
            cursor.execute(self._worker_write(queries["start_job"]), {"job_id": job_id, "worker_id": worker_id})
            started = _jobs_from(cursor)
        return started[0] if started else None

    def finish_job(self, job_id: int, worker_id: int, attempt: int, outcome: Outcome) -> bool:
        finished, _ = self.finish_and_start(job_id, worker_id, attempt, outcome, None)
        return finished

    def finish_and_start(
        self, job_id: int, worker_id: int, attempt: int, outcome: Outcome, next_job_id: int | None
    ) -> tuple[bool, Job | None]:
        finished, started = self._finish(job_id, worker_id, attempt, outcome, next_job_id=next_job_id)
        return finished, started[0] if started else None

    def finish_and_claim(
        self, job_id: int, worker_id: int, attempt: int, outcome: Outcome, queues: Sequence[str] | None, limit: int
    ) -> tuple[bool, list[Job]]:
        finished, claimed = self._finish(job_id, worker_id, attempt, outcome, queues=queues, claim_limit=limit)
        if claimed:
            self._drop_notifications()
        return finished, claimed

    def _finish(
        self,
        job_id: int,
        worker_id: int,
        attempt: int,
        outcome: Outcome,
        *,
        next_job_id: int | None = None,
        queues: Sequence[str] | None = None,
        claim_limit: int = 0,
    ) -> tuple[bool, list[Job]]:
        """The finish statement: whether the attempt was finished, and the jobs it started or claimed."""
        error = outcome.error
        parameters = {
            "job_id": job_id,
            "worker_id": worker_id,
            "attempt": attempt,
            "status": outcome.status.value,
            "retry_in_s": outcome.retry_in_s,
            "error_type": error.type if error else None,
            "error": error.message if error else None,
            "traceback": error.traceback if error else None,
            "next_job_id": next_job_id,
            "queues": None if queues is None else list(queues),
            "claim_limit": max(claim_limit, 0),
        }
        statement = queries["finish_and_claim"] if claim_limit > 0 else queries["finish_job"]
        with self._worker_cursor() as cursor:
            cursor.execute(self._worker_write(statement), parameters)
            columns = _column_names(cursor)
            rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        return bool(rows[0]["finished"]), [job_from_row(row) for row in rows if row["id"] is not None]

    def held_jobs(self, worker_id: int) -> list[Job]:
        with self._cursor() as cursor:
            cursor.execute(queries["held_jobs"], {"worker_id": worker_id})
            return _jobs_from(cursor)

    def _worker_write(self, query: str) -> str:
        """``query``, preceded by ``commit_without_waiting`` when synchronous_commit is off: in
        autocommit mode the two statements of one string run as one transaction."""
        if self.synchronous_commit:
            return query
        return queries["commit_without_waiting"] + "\n" + query

    def release_jobs(self, job_ids: Sequence[int], worker_id: int) -> int:
        if not job_ids:
            return 0
        with self._cursor() as cursor:
            cursor.execute(queries["release_jobs"], {"job_ids": list(job_ids), "worker_id": worker_id})
            (released,) = cursor.fetchone()
        return released

    def wait_for_jobs(self, queues: Sequence[str] | None, timeout_s: float) -> bool:
        deadline_ms = _monotonic_ms() + max(timeout_s, 0.0) * 1000
        wanted = None if queues is None else set(queues)
        with self._errors_translated():
            connection = self._connect()
            if not self._listening:
                with connection.cursor() as cursor:
                    cursor.execute(queries["listen_for_jobs"])
                self._listening = True
            poller = select.poll()
            poller.register(connection.fileno(), select.POLLIN)
            poller.register(self._wake.reader, select.POLLIN)
            while True:
                connection.poll()  # reads what arrived, without blocking
                if _take_notifications(connection, wanted):
                    return True
                remaining_ms = deadline_ms - _monotonic_ms()
                if remaining_ms <= 0:
                    return False
                events = poller.poll(math.ceil(remaining_ms))
                if any(fd == self._wake.reader for fd, _ in events):
                    self._wake.drain()
                    return False

    def interrupt_wait(self) -> None:
        # One write(2) on a non-blocking pipe: safe from a signal handler and from any thread.
        self._wake.wake()

    # -- workers and heartbeats ------------------------------------------------------------------

    def register_worker(self, hostname: str, pid: int, queues: Sequence[str] | None) -> int:
        parameters = {"hostname": hostname, "pid": pid, "queues": None if queues is None else list(queues)}
        with self._cursor() as cursor:
            cursor.execute(queries["register_worker"], parameters)
            (worker_id,) = cursor.fetchone()
        return worker_id

    def record_heartbeat(self, worker_id: int) -> bool:
        with self._cursor() as cursor:
            cursor.execute(queries["record_heartbeat"], {"worker_id": worker_id})
            return cursor.fetchone() is not None

    def list_workers(self) -> list[WorkerInfo]:
        with self._cursor() as cursor:
            cursor.execute(queries["list_workers"])
            columns = _column_names(cursor)
            return [WorkerInfo(**dict(zip(columns, row))) for row in cursor.fetchall()]

    def reclaim_jobs_of(self, worker_ids: Sequence[int], reason: str) -> list[ReclaimedJob]:
        if not worker_ids:
            return []  # an empty filter would mean every worker
        return self._reclaim_workers(list(worker_ids), None, reason)

    def reclaim_stale_workers(self, heartbeat_timeout_s: float) -> list[ReclaimedJob]:
        return self._reclaim_workers(None, heartbeat_timeout_s, f"no heartbeat for {heartbeat_timeout_s:g} s")

    def _reclaim_workers(
        self, worker_ids: list[int] | None, heartbeat_timeout_s: float | None, reason: str
    ) -> list[ReclaimedJob]:
        lost = JobError.worker_lost(reason)
        parameters = {
            "worker_ids": worker_ids,
            "heartbeat_timeout_s": heartbeat_timeout_s,
            "error_type": lost.type,
            "error": lost.message,
        }
        with self._cursor() as cursor:
            cursor.execute(queries["reclaim_workers"], parameters)
            return _reclaimed_from(cursor)

    # -- retention -------------------------------------------------------------------------------

    def prune_finished_jobs(self, older_than_s: float, statuses: Collection[Status], batch_size: int) -> int:
        parameters = {
            "older_than_s": older_than_s,
            "statuses": sorted(status.value for status in statuses),
            "batch_size": batch_size,
        }
        with self._cursor() as cursor:
            cursor.execute(queries["prune_finished_jobs"], parameters)
            return cursor.rowcount

    # -- inspection ------------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        with self._cursor() as cursor:
            cursor.execute(queries["get_job"], {"job_id": job_id})
            found = _jobs_from(cursor)
        return found[0] if found else None

    def count_jobs(self, queue: str | None = None) -> dict[Status, int]:
        counts = {status: 0 for status in Status}
        with self._cursor() as cursor:
            cursor.execute(queries["count_jobs"], {"queue": queue})
            for status, jobs in cursor.fetchall():
                counts[Status(status)] = jobs
        return counts


# -- rows and parameters ---------------------------------------------------------------------------


def _is_session_lost(exc: psycopg2.Error) -> bool:
    if not isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return False
    # No SQLSTATE: libpq's own error, such as "server closed the connection unexpectedly".
    return exc.pgcode is None or exc.pgcode.startswith(_SESSION_LOST_SQLSTATES)


def _column_names(cursor: psycopg2.extensions.cursor) -> list[str]:
    return [column.name for column in cursor.description]


def _jobs_from(cursor: psycopg2.extensions.cursor) -> list[Job]:
    columns = _column_names(cursor)
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
    )


def _reclaimed_from(cursor: psycopg2.extensions.cursor) -> list[ReclaimedJob]:
    columns = _column_names(cursor)
    rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    return [ReclaimedJob(**{**row, "status": Status(row["status"])}) for row in rows]


def _take_notifications(connection: psycopg2.extensions.connection, wanted: set[str] | None) -> bool:
    """Empties the connection's notification list; True if one was for a wanted queue."""
    notifies = connection.notifies
    relevant = any(
        notify.channel == NOTIFY_CHANNEL and (wanted is None or notify.payload in wanted) for notify in notifies
    )
    del notifies[:]
    return relevant


def _defer_parameters(jobs: Sequence[NewJob]) -> dict[str, str]:
    """One JSON array per column: the server unpacks them side by side, in input order."""
    schedules = [_schedule_of(job) for job in jobs]
    return {
        "queues": json.dumps([job.queue for job in jobs]),
        "task_names": json.dumps([job.task_name for job in jobs]),
        # json encodes a tuple as an array; only a Mapping that is not a dict needs a copy.
        "args": new_jobs.encode_arguments_of_many(jobs, [job.args for job in jobs]),
        "kwargs": new_jobs.encode_arguments_of_many(jobs, [new_jobs.as_dict(job.kwargs) for job in jobs]),
        "locks": json.dumps([job.lock for job in jobs]),
        "scheduled_at": json.dumps([scheduled_at for scheduled_at, _, _ in schedules]),
        "months": json.dumps([months for _, months, _ in schedules]),
        "seconds": json.dumps([seconds for _, _, seconds in schedules]),
        "max_attempts": json.dumps([job.max_attempts for job in jobs]),
    }


def _defer_one_parameters(job: NewJob) -> dict[str, Any]:
    scheduled_at, months, seconds = _schedule_of(job)
    return {
        "queue": job.queue,
        "task_name": job.task_name,
        # A call without arguments needs no encoding.
        "args": new_jobs.encode_arguments(job, job.args) if job.args else "[]",
        "kwargs": new_jobs.encode_arguments(job, new_jobs.as_dict(job.kwargs)) if job.kwargs else "{}",
        "lock": job.lock,
        "scheduled_at": scheduled_at,
        "months": months,
        "seconds": seconds,
        "max_attempts": job.max_attempts,
    }


def _schedule_of(job: NewJob) -> tuple[str | None, int | None, float | None]:
    """(scheduled_at as ISO 8601, months, seconds): an absolute time, or a delay that the
    database adds to its own clock, calendar months first."""
    scheduled_at = schedules.aware_scheduled_at(job.scheduled_at)
    if scheduled_at is not None:
        return scheduled_at.isoformat(), None, None
    delay = schedules.delay_of(job.schedule_in)
    if delay is None:
        return None, None, None
    months, seconds = delay
    return None, months, seconds


def _monotonic_ms() -> float:
    return time.monotonic() * 1000

__all__ = ["PostgresJobStore"]
