"""Admin: the operators' queries over one connection.

Runs the named queries of ``sql/admin.sql``. Multi-job changes lock every named job, check them
all, and change them in one transaction, or change none.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any, Iterator, Sequence

import structlog

from cabbage import dsn as dsn_module
from cabbage import schema
from cabbage.periodic import PeriodicOverview
from cabbage.rows import attempt_from_row, job_from_row, periodic_overview_from
from cabbage.admin.records import (
    DEFAULT_PAGE_SIZE,
    MAX_ATTEMPT_CHARS,
    MAX_PAGE_SIZE,
    MAX_LISTED_ERROR_CHARS,
    MAX_SHOWN_CHARS,
    FinishedCount,
    JobDetail,
    JobFilter,
    JobPage,
    JobState,
    LockLine,
    MinuteThroughput,
    QueueCount,
    TodoCount,
    WaitingJob,
    WorkerCounts,
    detail_of,
    marked_as_cut,
    summary_of,
)
from cabbage.exceptions import (
    ConfigurationError,
    DatabaseUnavailable,
    JobNotFound,
    JobStateError,
    SchemaError,
    StoreError,
)
from cabbage.jobs import Attempt, Job, Status, WorkerInfo
from cabbage.manual_changes import (
    MAX_JOB_ID,
    RETRYABLE_STATUSES,
    AbortResult,
    check_aborted_by,
    check_job_id,
    refuse_ineligible,
    refuse_taken_queueing_locks,
    wanted_job_ids,
)
from cabbage.queueing_locks import QUEUEING_LOCK_INDEX
from cabbage.sql import queries

log = structlog.get_logger()

RATE_WINDOW_S = 300.0  # jobs per minute are averaged over the last five minutes
# SQLSTATEs of a query naming what the database lacks (a table, a type, a column, a function):
# on a database without the cabbage schema, or with an older one, the schema version says which.
UNDEFINED_TABLE, UNDEFINED_OBJECT, UNDEFINED_COLUMN, UNDEFINED_FUNCTION = "42P01", "42704", "42703", "42883"
SCHEMA_OBJECT_MISSING = (UNDEFINED_TABLE, UNDEFINED_OBJECT, UNDEFINED_COLUMN, UNDEFINED_FUNCTION)
UNIQUE_VIOLATION = "23505"


class Admin:
    """The admin queries over one connection (from ``cabbage.dsn.connect``), which it owns.

    The connection must not be in autocommit mode: a multi-job change is one transaction.
    """

    def __init__(self, connection: Any, dsn: str = "") -> None:
        self.connection = connection
        self.dsn = dsn

    @classmethod
    def connect(cls, dsn: str) -> "Admin":
        return cls(cls.open_connection(dsn), dsn)

    @staticmethod
    def open_connection(dsn: str) -> Any:
        """A connection as Admin needs one (not autocommit), for a pool that lends them to Admins."""
        return dsn_module.connect(dsn, autocommit=False, application_name="cabbage-admin")

    def close(self) -> None:
        self.connection.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in a transaction that commits when the block ends and rolls back on error.

        Driver errors become cabbage errors here; they are caught through the connection's own
        DB-API classes (``connection.Error``), so this module needs no driver import.
        """
        try:
            with self.connection, self.connection.cursor() as cursor:
                yield cursor
        except (self.connection.OperationalError, self.connection.InterfaceError) as exc:
            reason = dsn_module.reason_of(exc, self.dsn)
            raise DatabaseUnavailable(f"lost the database {dsn_module.describe(self.dsn)}: {reason}") from None
        except self.connection.Error as exc:
            # A server gone mid-query reads as a bare DatabaseError without SQLSTATE.
            if self.connection.closed or (type(exc) is self.connection.DatabaseError and getattr(exc, "pgcode", None) is None):
                reason = dsn_module.reason_of(exc, self.dsn)
                raise DatabaseUnavailable(f"lost the database {dsn_module.describe(self.dsn)}: {reason}") from None
            if getattr(exc, "pgcode", None) in SCHEMA_OBJECT_MISSING:
                schema_problem = self._schema_problem()
                if schema_problem is not None:
                    raise schema_problem from None
            raise error_from_driver(exc, self.dsn) from None

    def _schema_problem(self) -> SchemaError | None:
        """The SchemaError that names the command fixing this database's schema (missing, or
        older than this cabbage needs), read after a query named something the database lacks;
        None when the schema is current. Its message is one line: libpq's text would show the
        query's SQL, and a reader needs the fix, not the statement."""
        try:
            with self.connection:  # the failed transaction was rolled back: a new one
                version = schema.read_schema_version(self.connection)
        except self.connection.Error:
            return None  # the first error says more
        try:
            schema.check_schema_version(version)
        except SchemaError as exc:
            return exc
        return None

    def _fetch_all(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """The rows of a named query, each as {column name: value}."""
        with self._transaction() as cursor:
            cursor.execute(queries[name], params)
            columns = [column[0] for column in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    # -- jobs -----------------------------------------------------------------------------------

    def list_jobs(self, job_filter: JobFilter, limit: int = DEFAULT_PAGE_SIZE, before_id: int | None = None) -> JobPage:
        """Jobs newest first; ``before_id`` is the cursor a previous page returned."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        if before_id is not None and not 1 <= before_id <= MAX_JOB_ID:
            raise ConfigurationError(f"cursor must be a job id from 1 to {MAX_JOB_ID}, got {before_id}")
        rows = self._fetch_all(
            "admin_list_jobs",
            status=job_filter.status.value if job_filter.status else None,
            queue=job_filter.queue,
            task_name=job_filter.task_name,
            lock=job_filter.lock,
            before_id=before_id,
            limit=limit + 1,  # one more tells whether a next page exists
            max_chars=MAX_LISTED_ERROR_CHARS,
        )
        jobs = [
            summary_of(job_from_cut_row({**row, "args": [], "kwargs": {}}), JobState(row["state"]),
                       row["waiting_behind_job_id"])
            for row in rows[:limit]
        ]
        next_cursor = jobs[-1].id if len(rows) > limit else None
        return JobPage(jobs, next_cursor)

    def get_job(self, job_id: int) -> JobDetail:
        """One job, its arguments, error message and traceback cut in the database
        (MAX_SHOWN_CHARS), and its kept attempts (MAX_ATTEMPT_CHARS)."""
        rows = self._fetch_all("admin_get_job", job_id=check_job_id(job_id), max_chars=MAX_SHOWN_CHARS)
        if not rows:
            raise JobNotFound(f"no job with id {job_id}")
        (row,) = rows
        preview = marked_as_cut(row["arguments_shown"], row["arguments_chars"])
        job = job_from_cut_row({**row, "args": row["args"] or [], "kwargs": row["kwargs"] or {}})
        return detail_of(job, preview, JobState(row["state"]), row["waiting_behind_job_id"], self.list_attempts(job_id))

    def list_attempts(self, job_id: int) -> list[Attempt]:
        """A job's kept attempts, oldest first, error messages and tracebacks cut
        (MAX_ATTEMPT_CHARS)."""
        rows = self._fetch_all("admin_list_attempts", job_id=check_job_id(job_id), max_chars=MAX_ATTEMPT_CHARS)
        return [
            attempt_from_row(
                {
                    **row,
                    "error": marked_as_cut(row["error"], row["error_chars"]),
                    "traceback": marked_as_cut(row["traceback"], row["traceback_chars"]),
                }
            )
            for row in rows
        ]

    def get_job_arguments(self, job_id: int) -> str:
        """A job's whole arguments as JSON text, ``{"args": [...], "kwargs": {...}}``, however long."""
        rows = self._fetch_all("admin_get_job_arguments", job_id=check_job_id(job_id))
        if not rows:
            raise JobNotFound(f"no job with id {job_id}")
        return rows[0]["arguments"]

    def retry_jobs(self, job_ids: Sequence[int]) -> list[int]:
        """Sends failed or cancelled jobs back to ``todo``, due now, attempts kept.

        All or nothing: when any id is unknown or not retryable, raises JobNotFound or
        JobStateError naming each such id, and changes no job.
        """
        changed = [job_id for (job_id,) in self._change_jobs("retry", job_ids, "admin_retry_jobs")]
        log.info("jobs_retried", job_ids=changed)
        return changed

    def cancel_jobs(self, job_ids: Sequence[int]) -> list[int]:
        """Cancels waiting (``todo``) jobs; all or nothing, as ``retry_jobs``.

        A ``doing`` job cannot be cancelled: its worker owns it until the attempt ends.
        """
        changed = [job_id for (job_id,) in self._change_jobs("cancel", job_ids, "admin_cancel_jobs")]
        log.info("jobs_cancelled", job_ids=changed)
        return changed

    def abort_jobs(self, job_ids: Sequence[int], aborted_by: str) -> AbortResult:
        """Aborts jobs: a waiting one (todo), or one only reserved by a worker, is cancelled now;
        a running one's worker is told (within a second) and its attempt ends ``cancelled``,
        'aborted by <aborted_by>'. All or nothing, as ``retry_jobs``: only todo and doing jobs."""
        aborted_by = check_aborted_by(aborted_by)
        rows = self._change_jobs("abort", job_ids, "admin_abort_jobs", aborted_by=aborted_by)
        result = AbortResult(
            cancelled=sorted(job_id for job_id, is_running in rows if not is_running),
            requested=sorted(job_id for job_id, is_running in rows if is_running),
        )
        log.info("jobs_aborted", cancelled_job_ids=result.cancelled, requested_job_ids=result.requested,
                 aborted_by=aborted_by)  # fmt: skip
        return result

    def _change_jobs(self, verb: str, job_ids: Sequence[int], query: str, **params: Any) -> list[tuple[Any, ...]]:
        """Locks and checks the jobs (all or nothing), then runs ``query``: its rows, each led by
        the id of a job it changed, in id order."""
        wanted = wanted_job_ids(verb, job_ids)
        with self._transaction() as cursor:
            cursor.execute(queries["admin_lock_jobs_for_change"], {"job_ids": wanted})
            locked = cursor.fetchall()
            refuse_ineligible(verb, wanted, {job_id: Status(status) for job_id, status, _, _ in locked})
            if verb == "retry":
                refuse_taken_queueing_locks(
                    {job_id: key for job_id, _, key, _ in locked if key is not None},
                    {key: waiting_job_id for _, _, key, waiting_job_id in locked if waiting_job_id is not None},
                )
            cursor.execute(queries[query], {"job_ids": wanted, **params})
            return sorted(tuple(row) for row in cursor.fetchall())

    def retry_matching(self, status: Status, task_name: str | None = None) -> list[int]:
        """Retries every job with a finished ``status`` (failed or cancelled), of one task if named."""
        if status not in RETRYABLE_STATUSES:
            raise JobStateError(f"only failed or cancelled jobs can be retried, not {status.value} ones")
        rows = self._fetch_all("admin_retry_jobs_matching", status=status.value, task_name=task_name)
        changed = sorted(row["id"] for row in rows)
        log.info("jobs_retried", job_ids=changed, status=status.value, task_name=task_name)
        return changed

    # -- counts and lines -----------------------------------------------------------------------

    def count_jobs(self) -> list[QueueCount]:
        rows = self._fetch_all("admin_count_jobs_by_queue_and_status")
        return [QueueCount(row["queue"], Status(row["status"]), row["jobs"]) for row in rows]

    def count_todo_jobs(self) -> list[TodoCount]:
        """Todo jobs by queue and state: waiting, scheduled, behind a lock."""
        rows = self._fetch_all("admin_count_todo_jobs_by_state")
        return [TodoCount(row["queue"], JobState(row["state"]), row["jobs"]) for row in rows]

    def oldest_waiting_jobs(self) -> list[WaitingJob]:
        return [WaitingJob(**row) for row in self._fetch_all("admin_oldest_waiting_jobs")]

    def throughput(self, minutes: int = 60) -> list[MinuteThroughput]:
        """Jobs finished in each of the last ``minutes`` minutes, the current one last."""
        return [MinuteThroughput(**row) for row in self._fetch_all("admin_throughput_per_minute", minutes=minutes)]

    def count_recently_finished(self, window_s: float) -> list[FinishedCount]:
        rows = self._fetch_all("admin_count_recently_finished", window_s=window_s)
        return [FinishedCount(row["task_name"], Status(row["outcome"]), row["jobs"]) for row in rows]

    def jobs_per_minute(self, window_s: float = RATE_WINDOW_S) -> float:
        """Jobs finished per minute, averaged over the last ``window_s`` seconds."""
        finished = sum(count.jobs for count in self.count_recently_finished(window_s))
        return round(finished / (window_s / 60), 2)

    def count_workers(self, heartbeat_timeout_s: float) -> WorkerCounts:
        (row,) = self._fetch_all("admin_count_workers", heartbeat_timeout_s=heartbeat_timeout_s)
        return WorkerCounts(**row)

    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker, by the store's own ``list_workers`` query (one definition)."""
        return [WorkerInfo(**row) for row in self._fetch_all("list_workers")]

    def list_busy_locks(self, limit: int = 200) -> list[LockLine]:
        return [LockLine(**row) for row in self._fetch_all("admin_list_busy_locks", limit=limit)]

    def list_periodic_schedules(self) -> PeriodicOverview:
        """The declared schedules with their last and next ticks, by the store's own query
        (one definition)."""
        with self._transaction() as cursor:
            cursor.execute(queries["list_periodic_schedules"])
            return periodic_overview_from(cursor)

    def database_now(self) -> datetime.datetime:
        (row,) = self._fetch_all("admin_database_clock")
        return row["database_now"]


def job_from_cut_row(row: dict[str, Any]) -> Job:
    """A Job from a row whose error texts were cut in SQL, each marked with what was cut."""
    return job_from_row(
        {
            **row,
            "last_error": marked_as_cut(row["last_error"], row["last_error_chars"]),
            "last_error_traceback": marked_as_cut(row["last_error_traceback"], row.get("last_error_traceback_chars")),
        }
    )


def error_from_driver(exc: Exception, dsn: str) -> StoreError:
    reason = dsn_module.reason_of(exc, dsn)
    constraint = getattr(getattr(exc, "diag", None), "constraint_name", None)
    if getattr(exc, "pgcode", None) == UNIQUE_VIOLATION and constraint == QUEUEING_LOCK_INDEX:
        # A retry whose job's queueing lock a job deferred meanwhile took (the check found none).
        return JobStateError(
            "cannot retry: a job with the same queueing lock was deferred meanwhile (one todo job per "
            "queueing lock); no job was changed"
        )
    return StoreError(f"the database refused an admin query: {reason}")
