"""PostgresJobStore: the JobStore contract on PostgreSQL, running the named queries of cabbage/sql.

The database keeps the invariants (ARCHITECTURE section 2): the triggers keep each lock's line,
the partial indexes make claims cheap, and every state change names the attempt's owner. This
module picks the query and runs it; ``cabbage.rows`` makes its parameters and reads its rows,
``cabbage.notifications`` waits for its notifications.

Connections are opened lazily, one per store and process, in autocommit mode. After ``fork`` a
store notices that its connection belongs to another process and opens its own; the inherited
one is dropped, never closed, because closing it would end the parent's session. A lost
connection raises ``DatabaseUnavailable`` and the next call reconnects. No psycopg2 error leaves
this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from cabbage import dsn as dsn_module
from cabbage import new_jobs, queueing_locks, rows
from cabbage import schema
from cabbage.exceptions import DatabaseBusy, DatabaseUnavailable, QueueingLockClash, StoreError
from cabbage.jobs import Attempt, ConnectionLimits, Job, JobError, NewJob, Outcome, ReclaimedJob, Status, WorkerInfo
from cabbage.periodic import PeriodicOverview, PeriodicSchedule, PeriodicTick, RecordedTick, RefusedTick, defer_tick_jobs
from cabbage.sql import queries
from cabbage.notifications import Listener, take_abort_notifications
from cabbage.postgres_async import DEFAULT_POOL_SIZE, AsyncPool
from cabbage.store import AbortNotices, JobStore

# SQLSTATE classes that mean the session is gone: connection exceptions, and the server
# shutting down or terminating the backend (pg_terminate_backend is 57P01).
_SESSION_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03")
# lock_not_available (lock_timeout) and query_canceled (statement_timeout): up, but held back.
_GAVE_UP_WAITING_SQLSTATES = ("55P03", "57014")


class PostgresJobStore(JobStore):
    """The job store on PostgreSQL. Constructing one opens nothing.

    ``dsn`` is a libpq URI or keyword string; None means ``$CABBAGE_DSN``, else libpq's PG*
    variables. ``async_pool_size``: how many sessions each event loop's awaited defers use
    (``Task.defer_async``). ``max_arguments_bytes``: see ``JobStore``.

    >>> store = PostgresJobStore("postgresql://app@db/app")
    >>> store.check_schema()    # SchemaError: run 'cabbage schema apply'
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        synchronous_commit: bool = True,
        async_pool_size: int = DEFAULT_POOL_SIZE,
        max_arguments_bytes: int = new_jobs.DEFAULT_MAX_ARGUMENTS_BYTES,
    ) -> None:
        self.dsn = dsn_module.resolve_dsn(dsn)
        self.synchronous_commit = synchronous_commit
        self.max_arguments_bytes = new_jobs.check_max_arguments_bytes(max_arguments_bytes)
        self._connection: psycopg2.extensions.connection | None = None
        self._connection_pid: int | None = None
        self._worker_statements_prepared = False
        self._listener = Listener()
        self.async_pool_size = async_pool_size
        self._async_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPool]" = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"PostgresJobStore({dsn_module.describe(self.dsn)!r})"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._listener.close()

    # -- connection ------------------------------------------------------------------------------

    def _connect(self) -> psycopg2.extensions.connection:
        if self._connection is not None and self._connection_pid != os.getpid():
            self._forget_connection()
        if self._connection is None or self._connection.closed:
            connection = dsn_module.connect(self.dsn, application_name=self.application_name)
            if self.lock_timeout_s is not None:
                with connection.cursor() as cursor:
                    cursor.execute(queries["set_lock_timeout"], {"lock_timeout": f"{round(self.lock_timeout_s * 1000)}ms"})
            self._connection = connection
            self._connection_pid = os.getpid()
            self._listener.forget_connection()
            self._worker_statements_prepared = False
        return self._connection

    def _forget_connection(self) -> None:
        # Not close(): on an inherited connection it would end the parent's session. Dropping
        # the reference is enough: psycopg2 (2.8+) closes a connection on garbage collection
        # only in the process that opened it.
        self._connection = None
        self._connection_pid = None
        self._listener.forget_connection()
        self._worker_statements_prepared = False

    @contextlib.contextmanager
    def _cursor(self, connection: Any = None) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on ``connection`` (the caller's) or on the store's own, with psycopg2
        errors turned into cabbage ones."""
        own = connection is None or connection is self._connection  # or its own, in _transaction
        with self._errors_translated(own):
            with (self._connect() if own else connection).cursor() as cursor:
                yield cursor

    @contextlib.contextmanager
    def _worker_cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor on the store's own connection, where the worker's statements are prepared."""
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
            connection = self._connection if own_connection else None
            if _is_session_lost(exc, connection):
                if not own_connection:
                    raise DatabaseUnavailable(f"the caller's connection was lost: {reason}") from None
                self.close()  # the next call reconnects
                # from None: the chained psycopg2 error would print libpq's unscrubbed text.
                raise DatabaseUnavailable(f"lost the connection to {dsn_module.describe(self.dsn)}: {reason}") from None
            if exc.pgcode in _GAVE_UP_WAITING_SQLSTATES:
                raise DatabaseBusy(f"the database did not answer in time: {reason}") from None
            raise StoreError(f"the database refused a cabbage query: {reason}") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg2.extensions.connection]:
        """The store's own connection in one transaction, committed when the block ends and
        rolled back when it raises; pass it on as ``connection=`` to run statements in it."""
        with self._errors_translated():
            connection = self._connect()
            connection.autocommit = False
            try:
                yield connection
                connection.commit()
            except BaseException:
                with contextlib.suppress(psycopg2.Error):
                    connection.rollback()
                raise
            finally:
                if not connection.closed:
                    connection.autocommit = True

    def close(self) -> None:
        connection, pid = self._connection, self._connection_pid
        self._forget_connection()
        if connection is not None and pid == os.getpid():
            with contextlib.suppress(psycopg2.Error):
                connection.close()

    def open_sibling(self) -> "PostgresJobStore":
        return PostgresJobStore(
            self.dsn, synchronous_commit=self.synchronous_commit, max_arguments_bytes=self.max_arguments_bytes
        )

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
        parameters = rows.defer_parameters(jobs, self.max_arguments_bytes)
        keys = [job.queueing_lock for job in jobs]
        _refuse_clashes_within(keys)
        found = self._execute_defer(connection, queries["defer_jobs"], parameters, keys)
        # Rows: the new ids, or (none inserted) the position and waiting job of each clash.
        clashes = [
            QueueingLockClash(position, keys[position - 1], waiting_job_id)  # type: ignore[arg-type]
            for _, position, waiting_job_id in found
            if waiting_job_id is not None
        ]
        if clashes:
            queueing_locks.refuse(clashes)
        return [job_id for job_id, _, _ in found]

    def defer_job(self, job: NewJob, connection: Any = None) -> int:
        parameters = rows.defer_one_parameters(job, self.max_arguments_bytes)
        ((job_id, waiting_job_id),) = self._execute_defer(connection, queries["defer_job"], parameters, [job.queueing_lock])
        _refuse_if_waiting(job, waiting_job_id)
        return job_id

    def defer_calls(
        self, job: NewJob, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], connection: Any = None
    ) -> list[int]:
        if not calls:
            return []
        parameters = rows.defer_calls_parameters(job, calls, self.max_arguments_bytes)
        keys = [job.queueing_lock] * len(calls)
        _refuse_clashes_within(keys)
        found = self._execute_defer(connection, queries["defer_calls"], parameters, keys)
        _refuse_if_waiting(job, next((waiting for _, waiting in found if waiting is not None), None))
        return [job_id for job_id, _ in found]

    def _execute_defer(
        self, connection: Any, statement: str, parameters: Mapping[str, Any], keys: Sequence[str | None]
    ) -> list[tuple[Any, ...]]:
        """The rows of a defer statement, run as ``_deferring`` runs it. The statement looks for
        the waiting job of its queueing locks first and inserts nothing when there is one. One
        that raced another transaction's defer of a key is refused by the unique index instead,
        having inserted nothing (the savepoint undoes it in the caller's transaction): it runs
        once more, and then finds the winner waiting (or, claimed meanwhile, the key free)."""
        for attempt in (1, 2):
            try:
                with self._deferring(connection) as execute:
                    try:
                        return execute(statement, parameters).fetchall()
                    except psycopg2.errors.UniqueViolation as exc:
                        if exc.diag.constraint_name != queueing_locks.QUEUEING_LOCK_INDEX:
                            raise
                        raise queueing_locks.QueueingLockRace() from None
            except queueing_locks.QueueingLockRace:
                if attempt == 2:
                    queueing_locks.refuse_race(keys)
        raise AssertionError("unreachable: the second attempt returns or raises")

    @contextlib.contextmanager
    def _deferring(self, connection: Any) -> Iterator[Callable[[str, Mapping[str, Any]], Any]]:
        """Gives a function that runs a defer statement and returns its cursor.

        In the caller's transaction the statement runs under a savepoint: when the database
        refuses the defer, only the defer is undone, and the caller's transaction, with the
        rows it wrote before, stays usable. (Each such defer is a subtransaction until the
        caller commits: many of them in one transaction are better one defer_many.)
        """
        joins_transaction = connection is not None and not connection.autocommit
        # In the same round trip as the statement: a savepoint costs no extra wait.
        prefix = queries["open_defer_savepoint"] + "\n" if joins_transaction else ""

        def execute(query: str, parameters: Mapping[str, Any]) -> Any:
            cursor.execute(prefix + query, parameters)
            return cursor

        with self._cursor(connection) as cursor:
            if not joins_transaction:
                yield execute
                return
            try:
                yield execute
            except Exception:
                # Fails too when the session is gone, or when the caller's transaction was
                # aborted before the defer (no savepoint then): the first error says which.
                with contextlib.suppress(psycopg2.Error):
                    cursor.execute(queries["undo_defer"])
                raise
            cursor.execute(queries["release_defer_savepoint"])

    async def defer_job_async(self, job: NewJob) -> int:
        parameters = rows.defer_one_parameters(job, self.max_arguments_bytes)
        ((job_id, waiting_job_id),) = await self._execute_defer_async(queries["defer_job"], parameters, [job.queueing_lock])
        _refuse_if_waiting(job, waiting_job_id)
        return job_id

    async def defer_calls_async(self, job: NewJob, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]]) -> list[int]:
        if not calls:
            return []
        parameters = rows.defer_calls_parameters(job, calls, self.max_arguments_bytes)
        keys = [job.queueing_lock] * len(calls)
        _refuse_clashes_within(keys)
        found = await self._execute_defer_async(queries["defer_calls"], parameters, keys)
        _refuse_if_waiting(job, next((waiting for _, waiting in found if waiting is not None), None))
        return [job_id for job_id, _ in found]

    async def _execute_defer_async(
        self, statement: str, parameters: Mapping[str, Any], keys: Sequence[str | None]
    ) -> list[tuple[Any, ...]]:
        """``_execute_defer`` on the running loop's sessions (autocommit: a refused statement
        inserted nothing)."""
        for attempt in (1, 2):
            try:
                async with self._async_pool().session() as session:
                    return await session.fetch_all(statement, parameters)
            except queueing_locks.QueueingLockRace:
                if attempt == 2:
                    queueing_locks.refuse_race(keys)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _async_pool(self) -> AsyncPool:
        """The sessions of the running event loop (each loop has its own: a session's socket is
        watched by the loop that opened it)."""
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            pool = self._async_pools[loop] = AsyncPool(self.dsn, self.application_name, self.async_pool_size)
        return pool

    # -- claiming and finishing ------------------------------------------------------------------

    def claim_jobs(self, worker_id: int, queues: Sequence[str] | None, limit: int = 1, *, start_all: bool = False) -> list[Job]:
        if limit <= 0:
            return []
        parameters = {
            "worker_id": worker_id, "queues": None if queues is None else list(queues), "limit": limit, "start_all": start_all,
        }  # fmt: skip
        with self._worker_cursor() as cursor:
            cursor.execute(self._worker_write(queries["claim_jobs"]), parameters)
            claimed = rows.jobs_from(cursor)
        if claimed:
            self._drop_notifications()
        return claimed

    def _drop_notifications(self) -> None:
        self._listener.drop_pending(self._connection)

    def start_job(self, job_id: int, worker_id: int) -> Job | None:
        with self._cursor() as cursor:
            cursor.execute(self._worker_write(queries["start_job"]), {"job_id": job_id, "worker_id": worker_id})
            started = rows.jobs_from(cursor)
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
            columns = rows.column_names(cursor)
            results = [dict(zip(columns, row)) for row in cursor.fetchall()]
        return bool(results[0]["finished"]), [rows.job_from_row(row) for row in results if row["id"] is not None]

    def finish_jobs_and_claim(
        self, worker_id: int, finishes: Sequence[tuple[int, int, Outcome]], queues: Sequence[str] | None, limit: int
    ) -> tuple[set[int], list[Job]]:
        if not finishes:
            return set(), []
        errors = [outcome.error for _, _, outcome in finishes]
        parameters = {
            "worker_id": worker_id,
            "job_ids": [job_id for job_id, _, _ in finishes],
            "attempts": [attempt for _, attempt, _ in finishes],
            "statuses": [outcome.status.value for _, _, outcome in finishes],
            "retry_in_s": [outcome.retry_in_s for _, _, outcome in finishes],
            "error_types": [error.type if error else None for error in errors],
            "errors": [error.message if error else None for error in errors],
            "tracebacks": [error.traceback if error else None for error in errors],
            "queues": None if queues is None else list(queues),
            "claim_limit": max(limit, 0),
        }
        with self._worker_cursor() as cursor:
            cursor.execute(self._worker_write(queries["finish_jobs_and_claim"]), parameters)
            columns = rows.column_names(cursor)
            results = [dict(zip(columns, row)) for row in cursor.fetchall()]
        claimed = [rows.job_from_row(row) for row in results if row["id"] is not None]
        if claimed:
            self._drop_notifications()
        return set(results[0]["finished_job_ids"]), claimed

    def held_jobs(self, worker_id: int) -> list[Job]:
        with self._cursor() as cursor:
            cursor.execute(queries["held_jobs"], {"worker_id": worker_id})
            return rows.jobs_from(cursor)

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

    def unstart_jobs(self, job_ids: Sequence[int], worker_id: int) -> int:
        if not job_ids:
            return 0
        with self._cursor() as cursor:
            cursor.execute(queries["unstart_jobs"], {"job_ids": list(job_ids), "worker_id": worker_id})
            return cursor.rowcount

    def seconds_until_next_due(self, queues: Sequence[str] | None) -> float | None:
        with self._worker_cursor() as cursor:
            cursor.execute(queries["seconds_until_next_due"], {"queues": None if queues is None else list(queues)})
            (seconds,) = cursor.fetchone()
        return None if seconds is None else max(seconds, 0.0)  # negative: overdue, due now

    def wait_for_jobs(self, queues: Sequence[str] | None, timeout_s: float) -> bool:
        with self._errors_translated():
            return self._listener.wait(self._connect(), queues, timeout_s)

    def interrupt_wait(self) -> None:
        self._listener.interrupt()

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

    def abort_requests_of(self, worker_id: int) -> dict[int, str | None]:
        with self._cursor() as cursor:
            cursor.execute(queries["abort_requests_of"], {"worker_id": worker_id})
            return dict(cursor.fetchall())

    def watch_aborts(self, worker_id: int) -> AbortNotices:
        return _AbortListener(self, worker_id)

    def list_workers(self) -> list[WorkerInfo]:
        with self._cursor() as cursor:
            cursor.execute(queries["list_workers"])
            columns = rows.column_names(cursor)
            return [WorkerInfo(**dict(zip(columns, row))) for row in cursor.fetchall()]

    def reclaim_jobs_of(self, worker_ids: Sequence[int], reason: str) -> list[ReclaimedJob]:
        if not worker_ids:
            return []  # an empty filter would mean every worker
        return self._reclaim_workers(list(worker_ids), None, reason)

    def reclaim_stale_workers(self, heartbeat_timeout_s: float, excluding: Sequence[int] = ()) -> list[ReclaimedJob]:
        return self._reclaim_workers(None, heartbeat_timeout_s, f"no heartbeat for {heartbeat_timeout_s:g} s", excluding)

    def _reclaim_workers(
        self, worker_ids: list[int] | None, heartbeat_timeout_s: float | None, reason: str, excluding: Sequence[int] = ()
    ) -> list[ReclaimedJob]:
        lost = JobError.worker_lost(reason)
        parameters = {
            "worker_ids": worker_ids,
            "excluding": list(excluding),
            "heartbeat_timeout_s": heartbeat_timeout_s,
            "error_type": lost.type,
            "error": lost.message,
        }
        with self._cursor() as cursor:
            cursor.execute(queries["reclaim_workers"], parameters)
            return rows.reclaimed_from(cursor)

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

    def connection_limits(self) -> ConnectionLimits:
        with self._cursor() as cursor:
            cursor.execute(queries["connection_limits"])
            columns = rows.column_names(cursor)
            return ConnectionLimits(**dict(zip(columns, cursor.fetchone())))

    # -- periodic tasks ---------------------------------------------------------------------------

    def declare_periodic_schedules(self, schedules: Sequence[PeriodicSchedule]) -> None:
        if schedules:
            with self._cursor() as cursor:
                cursor.execute(queries["declare_periodic_schedules"], {"schedules": rows.schedules_parameter(schedules)})

    def list_periodic_schedules(self) -> PeriodicOverview:
        with self._cursor() as cursor:
            cursor.execute(queries["list_periodic_schedules"])
            return rows.periodic_overview_from(cursor)

    def record_periodic_ticks(self, ticks: Sequence[PeriodicTick]) -> list[RecordedTick]:
        if not ticks:
            return []
        with self._transaction() as connection:
            with self._cursor(connection) as cursor:
                cursor.execute(queries["record_periodic_ticks"], {"ticks": rows.ticks_parameter(ticks)})
                recorded = rows.recorded_ticks_from(cursor)
            # Their jobs through defer_jobs, under its savepoints: a job its queueing lock refuses
            # leaves its tick skipped, and the rest of the transaction goes on.
            recorded = defer_tick_jobs(recorded, ticks, lambda jobs: self.defer_jobs(jobs, connection))
            with_jobs = [tick for tick in recorded if tick.job_id is not None or isinstance(tick, RefusedTick)]
            if with_jobs:
                with self._cursor(connection) as cursor:
                    cursor.execute(queries["record_periodic_tick_jobs"], {"ticks": rows.tick_jobs_parameter(with_jobs)})
            return recorded

    def prune_periodic_ticks(self, older_than_s: float, batch_size: int) -> int:
        with self._cursor() as cursor:
            cursor.execute(queries["prune_periodic_ticks"], {"older_than_s": older_than_s, "batch_size": batch_size})
            return cursor.rowcount

    # -- inspection ------------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        with self._cursor() as cursor:
            cursor.execute(queries["get_job"], {"job_id": job_id})
            found = rows.jobs_from(cursor)
        return found[0] if found else None

    def list_attempts(self, job_id: int) -> list[Attempt]:
        with self._cursor() as cursor:
            cursor.execute(queries["list_attempts"], {"job_id": job_id})
            return rows.attempts_from(cursor)

    def count_jobs(self, queue: str | None = None) -> dict[Status, int]:
        counts = {status: 0 for status in Status}
        with self._cursor() as cursor:
            cursor.execute(queries["count_jobs"], {"queue": queue})
            for status, jobs in cursor.fetchall():
                counts[Status(status)] = jobs
        return counts


# -- rows and parameters ---------------------------------------------------------------------------


class _AbortListener(AbortNotices):
    """LISTEN cabbage_aborts on a store's own connection (a worker's heartbeat store), sent
    again on each new connection: a reconnect, or a fork."""

    def __init__(self, store: PostgresJobStore, worker_id: int) -> None:
        self.store = store
        self.worker_id = worker_id
        self._listening_on: Any = None

    def fileno(self) -> int | None:
        try:
            with self.store._errors_translated():
                connection = self.store._connect()
                if connection is not self._listening_on:
                    with connection.cursor() as cursor:
                        cursor.execute(queries["listen_for_aborts"])
                    self._listening_on = connection
                return int(connection.fileno())
        except DatabaseUnavailable:
            return None  # the heartbeats find the requests once the database is back

    def take(self) -> bool:
        connection = self._listening_on
        if connection is None or connection is not self.store._connection:
            return False
        try:
            with self.store._errors_translated():
                return take_abort_notifications(connection, self.worker_id)
        except DatabaseUnavailable:
            return False

    def close(self) -> None:
        self._listening_on = None  # the store's connection closes with the store


def _refuse_clashes_within(keys: Sequence[str | None]) -> None:
    """A defer whose jobs repeat a queueing lock is refused before it is sent."""
    clashes = queueing_locks.clashes_within(keys)
    if clashes:
        queueing_locks.refuse(clashes)


def _refuse_if_waiting(job: NewJob, waiting_job_id: int | None) -> None:
    """A defer of ``job`` (or of calls like it) found a todo job holding its queueing lock."""
    if waiting_job_id is not None:
        queueing_locks.refuse([QueueingLockClash(1, job.queueing_lock, waiting_job_id)])  # type: ignore[arg-type]


def _is_session_lost(exc: psycopg2.Error, connection: Any = None) -> bool:
    """Whether the error means the session is gone: a connection-class SQLSTATE, libpq's own
    error with none, or a connection psycopg2 marks broken (a server that vanished mid-query
    is reported as a bare DatabaseError, "server closed the connection unexpectedly")."""
    if connection is not None and connection.closed:
        return True
    if type(exc) is psycopg2.DatabaseError and exc.pgcode is None:
        return True  # libpq lost the server mid-query (its subclasses without SQLSTATE are ours: bad parameters)
    if not isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return False
    # No SQLSTATE: libpq's own error, such as "server closed the connection unexpectedly".
    return exc.pgcode is None or exc.pgcode.startswith(_SESSION_LOST_SQLSTATES)


__all__ = ["PostgresJobStore"]
