"""What only the PostgreSQL store does: the caller's transaction, one-statement bulk defers,
LISTEN/NOTIFY wake-ups, reconnects, fork safety, and reclaims racing across sessions.

The behaviour both stores share is in test_store_contract.py.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import closing
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from cabbage.exceptions import (
    AlreadyEnqueued,
    DatabaseUnavailable,
    QueueingLockClash,
    StoreError,
    UnserialisableArgumentError,
)
from cabbage.jobs import AttemptOutcome, JobError, Outcome, Status
from cabbage.postgres import PostgresJobStore
from cabbage.sql import queries
from tests.integration.new_jobs import new_job
from tests.waiting import wait_for


def query(connection: psycopg2.extensions.connection, statement: str, params: Any = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


def cabbage_sessions(sql: psycopg2.extensions.connection) -> set[int]:
    """Backend pids of the stores' sessions on this test's database (application_name cabbage)."""
    rows = query(
        sql,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'cabbage'",
    )
    return {pid for (pid,) in rows}


# -- synchronous_commit off -----------------------------------------------------------------------


def test_without_synchronous_commit_only_the_workers_writes_skip_the_wait(
    db_dsn: str, sql: psycopg2.extensions.connection
) -> None:
    # A trigger notes the setting each write ran under: the transaction's own, as it committed.
    with sql.cursor() as cursor:
        cursor.execute(
            """
        CREATE TABLE commit_modes (operation text, mode text);
        CREATE FUNCTION note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO commit_modes VALUES (TG_OP || ' ' || NEW.status, current_setting('synchronous_commit'));
            RETURN NEW;
        END $$;
        CREATE TRIGGER note_commit_mode AFTER INSERT OR UPDATE ON cabbage_jobs
            FOR EACH ROW EXECUTE FUNCTION note_commit_mode();
        """
        )
    store = PostgresJobStore(db_dsn, synchronous_commit=False)
    try:
        worker_id = store.register_worker("test-host", 1, None)
        store.defer_jobs([new_job(), new_job()])
        first, second = store.claim_jobs(worker_id, None, limit=2)
        finished, started = store.finish_and_start(first.id, worker_id, first.attempts, Outcome.succeeded(), second.id)
        assert finished and started is not None and started.id == second.id
        assert store.finish_job(second.id, worker_id, started.attempts, Outcome.succeeded())
        # The session itself keeps the server's setting: a defer after them still waits.
        store.defer_jobs([new_job()])
        assert query(sql, "SELECT operation, mode FROM commit_modes") == [
            ("INSERT todo", "on"), ("INSERT todo", "on"),
            ("UPDATE doing", "off"), ("UPDATE doing", "off"),   # the claim: one started, one reserved
            ("UPDATE succeeded", "off"), ("UPDATE doing", "off"),  # the finish that starts the next
            ("UPDATE succeeded", "off"),
            ("INSERT todo", "on"),
        ]
        assert store.open_sibling().synchronous_commit is False
    finally:
        store.close()


# -- deferring -----------------------------------------------------------------------------------


def test_a_job_deferred_in_the_callers_transaction_commits_with_it(
    store: PostgresJobStore, db_dsn: str
) -> None:
    with closing(psycopg2.connect(db_dsn)) as caller:
        with caller.cursor() as cursor:
            cursor.execute("CREATE TABLE orders (id integer)")
            cursor.execute("INSERT INTO orders VALUES (1)")
        job_id = store.defer_job(new_job(args=(1,)), connection=caller)
        assert store.get_job(job_id) is None, "visible before the caller committed"
        caller.commit()
    job = store.get_job(job_id)
    assert job is not None and job.args == (1,) and job.status is Status.TODO


def test_a_job_deferred_in_the_callers_transaction_rolls_back_with_it(
    store: PostgresJobStore, db_dsn: str, sql: psycopg2.extensions.connection
) -> None:
    query(sql, "CREATE TABLE orders (id integer); SELECT 1")
    with closing(psycopg2.connect(db_dsn)) as caller:
        with caller.cursor() as cursor:
            cursor.execute("INSERT INTO orders VALUES (1)")
        job_ids = store.defer_jobs([new_job(), new_job()], connection=caller)
        caller.rollback()
    assert [store.get_job(job_id) for job_id in job_ids] == [None, None]
    assert query(sql, "SELECT count(*) FROM orders") == [(0,)]
    assert store.count_jobs()[Status.TODO] == 0


@pytest.mark.parametrize("bulk", [False, True])
def test_months_are_added_in_utc_whatever_the_callers_time_zone(
    store: PostgresJobStore, db_dsn: str, bulk: bool
) -> None:
    with closing(psycopg2.connect(db_dsn)) as caller:
        with caller.cursor() as cursor:
            # Added in the session's zone, a month that crosses a change of summer time (or a
            # month end that falls on another day locally) would land an hour or a day off.
            cursor.execute("SET TIME ZONE 'Europe/Paris'")
            cursor.execute("SELECT now()")
            (now,) = cursor.fetchone()
        jobs = [new_job(schedule_in={"months": 1, "seconds": 30.0})] * (2 if bulk else 1)
        job_ids = store.defer_jobs(jobs, connection=caller)
        with caller.cursor() as cursor:
            cursor.execute(
                "SELECT bool_and(scheduled_at = ((%s::timestamptz AT TIME ZONE 'UTC') + interval '1 month')"
                " AT TIME ZONE 'UTC' + interval '30 seconds') FROM cabbage_jobs WHERE id = ANY(%s)",
                (now, job_ids),
            )
            assert cursor.fetchone() == (True,)
        caller.rollback()


def test_a_refused_defer_on_the_callers_connection_raises_a_cabbage_error(
    store: PostgresJobStore, db_dsn: str
) -> None:
    with closing(psycopg2.connect(db_dsn)) as caller:
        with caller.cursor() as cursor, pytest.raises(psycopg2.Error):
            cursor.execute("SELECT 1 / 0")  # the caller's transaction is now aborted
        with pytest.raises(StoreError) as raised:
            store.defer_job(new_job(), connection=caller)
        assert not isinstance(raised.value, psycopg2.Error)


def test_a_refused_defer_leaves_the_callers_transaction_usable(store: PostgresJobStore, db_dsn: str) -> None:
    # max_attempts 0 is refused by the database alone (cabbage_jobs_max_attempts_positive): it
    # stands for every refusal only the database can make, such as a unique index's.
    refused = new_job(max_attempts=0)
    deferrals = [
        lambda caller: store.defer_job(refused, connection=caller),
        lambda caller: store.defer_jobs([new_job(), refused], connection=caller),
        lambda caller: store.defer_calls(refused, [((), {}), (("a",), {})], connection=caller),
    ]
    with closing(psycopg2.connect(db_dsn)) as caller, caller.cursor() as cursor:
        cursor.execute("CREATE TABLE orders (id integer)")
        caller.commit()
        for number, defer in enumerate(deferrals, start=1):
            cursor.execute("INSERT INTO orders VALUES (%s)", (number,))
            with pytest.raises(StoreError, match="cabbage_jobs_max_attempts_positive"):
                defer(caller)
            cursor.execute("INSERT INTO orders VALUES (%s)", (-number,))  # the transaction still takes work
        kept = store.defer_job(new_job(args=("kept",)), connection=caller)
        caller.commit()
        assert sorted(row for (row,) in query(caller, "SELECT id FROM orders")) == [-3, -2, -1, 1, 2, 3]
    assert store.count_jobs()[Status.TODO] == 1 and store.get_job(kept).args == ("kept",)  # type: ignore[union-attr]


def test_a_defer_on_an_autocommit_connection_commits_at_once(store: PostgresJobStore, db_dsn: str) -> None:
    with closing(psycopg2.connect(db_dsn)) as caller:
        caller.autocommit = True  # no transaction to keep usable: no savepoint either
        job_id = store.defer_job(new_job(), connection=caller)
        with pytest.raises(StoreError, match="cabbage_jobs_max_attempts_positive"):
            store.defer_jobs([new_job(), new_job(max_attempts=0)], connection=caller)
    assert store.get_job(job_id) is not None and store.count_jobs()[Status.TODO] == 1


@pytest.mark.parametrize("count", [1, 3], ids=["single", "bulk"])
def test_a_nul_character_is_refused_by_name_and_a_backslash_is_kept(store: PostgresJobStore, count: int) -> None:
    with pytest.raises(UnserialisableArgumentError, match=r"argument 1 of write_alphabet is not JSON-serialisable \(str with a NUL character"):
        store.defer_jobs([new_job(args=("a\x00b",))] * count)
    literal = "C:\\u0000 is a path, not a NUL"
    job_ids = store.defer_jobs([new_job(args=(literal,), kwargs={literal: literal})] * count)
    assert {(job.args, tuple(job.kwargs.items())) for job in map(store.get_job, job_ids) if job} == {
        ((literal,), ((literal, literal),))
    }


class CountingCursor(psycopg2.extensions.cursor):
    def execute(self, query: Any, vars: Any = None) -> Any:
        self.connection.executed.append(query)  # type: ignore[attr-defined]
        return super().execute(query, vars)


class CountingConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that records every statement its cursors execute."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cursor_factory", CountingCursor)
        return super().cursor(*args, **kwargs)


def assert_one_defer_statement_and_its_savepoint(executed: list[str], query_name: str) -> None:
    """In the caller's transaction, a defer of any number of jobs is two round trips: the
    savepoint with the one insert, then the savepoint's release."""
    assert executed == [queries["open_defer_savepoint"] + "\n" + queries[query_name], queries["release_defer_savepoint"]]


def test_a_bulk_defer_is_one_statement_and_one_notification_per_queue(
    store: PostgresJobStore, db_dsn: str
) -> None:
    jobs = [new_job(queue="mail" if n % 2 else "sms", args=(n,)) for n in range(10_000)]
    with closing(psycopg2.connect(db_dsn)) as listener, closing(
        psycopg2.connect(db_dsn, connection_factory=CountingConnection)
    ) as caller:
        listener.autocommit = True
        query(listener, "LISTEN cabbage_jobs; SELECT 1")
        caller.executed = []  # type: ignore[attr-defined]
        job_ids = store.defer_jobs(jobs, connection=caller)
        assert_one_defer_statement_and_its_savepoint(caller.executed, "defer_jobs")  # type: ignore[attr-defined]
        caller.commit()

        def notified() -> list[str]:
            listener.poll()
            return [notify.payload for notify in listener.notifies]

        wait_for(lambda: len(notified()) >= 2, 10, "the deferral's notifications")
        assert sorted(notified()) == ["mail", "sms"]
    assert len(job_ids) == len(jobs)


def listening_connection(db_dsn: str) -> psycopg2.extensions.connection:
    listener = psycopg2.connect(db_dsn)
    listener.autocommit = True
    query(listener, "LISTEN cabbage_jobs; SELECT 1")
    return listener


def wait_for_notifications(listener: psycopg2.extensions.connection, count: int) -> list[str]:
    """The payloads received so far, once there are at least ``count`` of them."""
    def received() -> list[str]:
        listener.poll()
        return [notify.payload for notify in listener.notifies]

    wait_for(lambda: len(received()) >= count, 10, f"{count} notification(s) on cabbage_jobs")
    return received()


def test_a_single_defer_notifies_its_queue_when_the_caller_commits(store: PostgresJobStore, db_dsn: str) -> None:
    with closing(listening_connection(db_dsn)) as listener, closing(psycopg2.connect(db_dsn)) as caller:
        store.defer_job(new_job(queue="sms"), connection=caller)
        caller.rollback()
        store.defer_job(new_job(queue="mail"), connection=caller)
        caller.commit()
        # Notifications arrive in commit order: a rolled-back one would come before this one.
        assert wait_for_notifications(listener, 1) == ["mail"]


def test_a_job_waiting_behind_its_lock_wakes_nobody(store: PostgresJobStore, db_dsn: str) -> None:
    with closing(listening_connection(db_dsn)) as listener:
        store.defer_job(new_job(queue="mail", lock="L"))  # heads the line: claimable now
        store.defer_job(new_job(queue="sms", lock="L"))  # waits behind it: nothing to claim yet
        store.defer_job(new_job(queue="push"))
        store.defer_jobs([new_job(queue="sms", lock="L"), new_job(queue="push", lock="M")])
        assert wait_for_notifications(listener, 3) == ["mail", "push", "push"]


def test_deferring_calls_is_one_statement_and_one_notification(store: PostgresJobStore, db_dsn: str) -> None:
    calls = [((n,), {}) if n % 2 else ((), {"n": n}) for n in range(10_000)]
    with closing(listening_connection(db_dsn)) as listener, closing(
        psycopg2.connect(db_dsn, connection_factory=CountingConnection)
    ) as caller:
        caller.executed = []  # type: ignore[attr-defined]
        job_ids = store.defer_calls(new_job(queue="mail"), calls, connection=caller)
        assert_one_defer_statement_and_its_savepoint(caller.executed, "defer_calls")  # type: ignore[attr-defined]
        caller.commit()
        store.defer_job(new_job(queue="sms"))
        # Notifications arrive in commit order: a second one for mail would come before sms.
        assert wait_for_notifications(listener, 2) == ["mail", "sms"]
    assert len(job_ids) == len(calls) and job_ids == sorted(job_ids)
    first, second = store.get_job(job_ids[0]), store.get_job(job_ids[1])
    assert first is not None and (first.args, first.kwargs) == ((), {"n": 0})
    assert second is not None and (second.args, second.kwargs) == ((1,), {})


def test_ids_come_back_in_input_order_while_another_bulk_defer_races(
    store: PostgresJobStore, db_dsn: str
) -> None:
    other_store = PostgresJobStore(db_dsn)
    results: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def defer(name: str, job_store: PostgresJobStore) -> None:
        batch = [new_job(args=(name, n), lock=f"{name}-{n % 7}") for n in range(5_000)]
        start.wait()
        results[name] = job_store.defer_jobs(batch)

    threads = [threading.Thread(target=defer, args=args) for args in (("a", store), ("b", other_store))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other_store.close()

    for name, job_ids in results.items():
        assert job_ids == sorted(job_ids) and len(set(job_ids)) == 5_000
        for n in (0, 1, 2_500, 4_999):
            assert store.get_job(job_ids[n]).args == (name, n)  # type: ignore[union-attr]
    # Each lock's line starts with its first job: ids and lines agree.
    worker_id = store.register_worker("test-host", 1, None)
    heads = {job.lock: job.args[1] for job in store.claim_jobs(worker_id, None, limit=100)}
    assert heads == {f"{name}-{k}": k for name in "ab" for k in range(7)}


# -- waiting for jobs ----------------------------------------------------------------------------


def test_a_wait_wakes_only_for_the_queues_it_waits_on(store: PostgresJobStore, db_dsn: str) -> None:
    store.wait_for_jobs(["mail"], timeout_s=0.01)  # starts listening
    with closing(PostgresJobStore(db_dsn)) as deferrer:
        deferrer.defer_job(new_job(queue="sms"))
        started = time.monotonic()
        assert not store.wait_for_jobs(["mail"], timeout_s=0.3)
        assert time.monotonic() - started >= 0.25
        deferrer.defer_job(new_job(queue="sms"))
        assert store.wait_for_jobs(None, timeout_s=10.0), "no queue filter: any deferral wakes"


def test_a_notification_sent_before_the_wait_is_not_lost(store: PostgresJobStore, db_dsn: str) -> None:
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    with closing(PostgresJobStore(db_dsn)) as deferrer:
        deferrer.defer_job(new_job())
    time.sleep(0.05)  # the notification is delivered while nobody waits
    started = time.monotonic()
    assert store.wait_for_jobs(["queue"], timeout_s=10.0)
    assert time.monotonic() - started < 5.0


def test_interrupt_wait_from_a_signal_handler(store: PostgresJobStore) -> None:
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: store.interrupt_wait())
    sender = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        started = time.monotonic()
        sender.start()
        assert not store.wait_for_jobs(["queue"], timeout_s=10.0)
        assert time.monotonic() - started < 5.0
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)


# -- connections ---------------------------------------------------------------------------------


def test_a_store_opens_nothing_until_used() -> None:
    store = PostgresJobStore("postgresql://app:secret@127.0.0.1:1/app?connect_timeout=2")
    store.interrupt_wait()
    with pytest.raises(DatabaseUnavailable) as raised:
        store.get_job(1)
    assert "secret" not in str(raised.value) and "postgresql://app:***@127.0.0.1:1/app" in str(raised.value)
    store.close()


def test_a_terminated_session_is_reported_then_replaced(
    store: PostgresJobStore, sql: psycopg2.extensions.connection, db_dsn: str
) -> None:
    store.wait_for_jobs(["queue"], timeout_s=0.01)  # connects and listens
    (backend,) = cabbage_sessions(sql)
    query(sql, "SELECT pg_terminate_backend(%s)", (backend,))
    wait_for(lambda: backend not in cabbage_sessions(sql), 10, "the terminated backend to exit")

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="lost the connection to"):
        store.wait_for_jobs(["queue"], timeout_s=10.0)
    assert time.monotonic() - started < 5.0, "a wait on a dead session must fail, not sleep"

    assert store.get_job(1) is None  # the next call reconnects
    assert cabbage_sessions(sql) - {backend}
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    with closing(PostgresJobStore(db_dsn)) as deferrer:
        deferrer.defer_job(new_job())
    assert store.wait_for_jobs(["queue"], timeout_s=10.0), "the new session listens again"


def run_in_child(body: Any) -> int:
    """Forks; the child runs body() and exits 0 if it returned True. Returns the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() else 2
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_fork_drops_the_inherited_connection_without_closing_the_parents_session(
    store: PostgresJobStore, sql: psycopg2.extensions.connection
) -> None:
    job_id = store.defer_job(new_job())
    parent_sessions = cabbage_sessions(sql)

    def child() -> bool:
        store.close()  # on the inherited connection: dropped, not closed
        found = store.get_job(job_id) is not None  # on a connection of the child's own
        store.close()
        gc.collect()
        return found

    assert run_in_child(child) == 0
    assert store.get_job(job_id) is not None, "the parent's session survived the child"
    assert parent_sessions <= cabbage_sessions(sql)


def test_a_child_that_just_uses_the_store_leaves_the_parents_session_alone(
    store: PostgresJobStore, sql: psycopg2.extensions.connection
) -> None:
    worker_id = store.register_worker("test-host", os.getpid(), None)
    parent_sessions = cabbage_sessions(sql)
    assert run_in_child(lambda: store.record_heartbeat(worker_id)) == 0
    assert store.record_heartbeat(worker_id)
    assert parent_sessions <= cabbage_sessions(sql)


def test_interrupting_a_childs_wait_does_not_wake_the_parent(store: PostgresJobStore) -> None:
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    assert run_in_child(lambda: store.interrupt_wait() is None) == 0
    started = time.monotonic()
    assert not store.wait_for_jobs(["queue"], timeout_s=0.2)
    assert time.monotonic() - started >= 0.15, "the child's interrupt reached the parent's pipe"


# -- reclaim races -------------------------------------------------------------------------------


def test_racing_reclaims_take_each_job_back_once(
    store: PostgresJobStore, sql: psycopg2.extensions.connection, db_dsn: str
) -> None:
    worker_id = store.register_worker("test-host", 1, None)
    store.defer_jobs([new_job() for _ in range(5)])
    claimed = store.claim_jobs(worker_id, None, limit=5)
    results: dict[str, Any] = {}

    def reclaim(name: str, call: Any) -> None:
        with closing(PostgresJobStore(db_dsn)) as racer:
            results[name] = call(racer)

    # The first master's reclaim runs but does not commit yet: it holds the worker row.
    with closing(psycopg2.connect(db_dsn)) as first:
        with first.cursor() as cursor:
            cursor.execute(
                queries["reclaim_workers"],
                {"worker_ids": [worker_id], "excluding": [], "heartbeat_timeout_s": None, "error_type": "WorkerLost", "error": "worker lost: first"},
            )
            first_reclaimed = cursor.fetchall()
        racers = [
            threading.Thread(target=reclaim, args=("by id", lambda racer: racer.reclaim_jobs_of([worker_id], "second"))),
            threading.Thread(target=reclaim, args=("stale", lambda racer: racer.reclaim_stale_workers(0.0))),
        ]
        for racer in racers:
            racer.start()
        wait_for(
            lambda: query(sql, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                               " AND wait_event_type = 'Lock'") == [(2,)],
            10, "both racing reclaims to wait for the worker row",
        )
        first.commit()
        for racer in racers:
            racer.join()

    assert sorted(row[0] for row in first_reclaimed) == sorted(job.id for job in claimed)
    assert results == {"by id": [], "stale": []}
    errors = {job.last_error.message for job in map(store.get_job, [job.id for job in claimed]) if job and job.last_error}
    assert errors == {"worker lost: first"}


def test_a_heartbeat_while_the_reclaim_waits_spares_the_worker(
    store: PostgresJobStore, sql: psycopg2.extensions.connection, db_dsn: str
) -> None:
    worker_id = store.register_worker("test-host", 1, None)
    query(sql, "UPDATE cabbage_workers SET last_heartbeat_at = now() - interval '1 hour' RETURNING id")
    results: dict[str, Any] = {}
    with closing(psycopg2.connect(db_dsn)) as beating:
        with beating.cursor() as cursor:  # a heartbeat in flight: it holds the row until commit
            cursor.execute(queries["record_heartbeat"], {"worker_id": worker_id})

        def reclaim() -> None:
            with closing(PostgresJobStore(db_dsn)) as master:
                results["reclaimed"] = master.reclaim_stale_workers(60.0)

        master_thread = threading.Thread(target=reclaim)
        master_thread.start()
        wait_for(
            lambda: query(sql, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                               " AND wait_event_type = 'Lock'") == [(1,)],
            10, "the reclaim to wait for the worker row",
        )
        beating.commit()
        master_thread.join()
    assert results["reclaimed"] == []
    assert [info.worker_id for info in store.list_workers()] == [worker_id]


def test_a_refused_statement_is_a_store_error_and_the_session_goes_on(store: PostgresJobStore) -> None:
    with pytest.raises(StoreError, match="integer out of range") as raised:
        store.register_worker("test-host", 2**40, None)  # pid is an integer column
    assert not isinstance(raised.value, (psycopg2.Error, DatabaseUnavailable))
    assert store.register_worker("test-host", 1, None) > 0


# -- queueing locks: the caller's transaction and races between sessions --------------------------


def waiting_on_a_lock(sql: psycopg2.extensions.connection) -> int:
    return query(sql, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND wait_event_type = 'Lock'")[0][0]


def test_a_refused_defer_on_the_callers_connection_leaves_its_transaction_going(
    store: PostgresJobStore, db_dsn: str
) -> None:
    waiting = store.defer_job(new_job(queueing_lock="k"))
    with closing(psycopg2.connect(db_dsn)) as caller:
        with caller.cursor() as cursor:
            cursor.execute("CREATE TABLE orders (id integer)")
            cursor.execute("INSERT INTO orders VALUES (1)")
        for defer in (
            lambda: store.defer_job(new_job(queueing_lock="k"), connection=caller),
            lambda: store.defer_jobs([new_job(), new_job(queueing_lock="k")], connection=caller),
            lambda: store.defer_calls(new_job(queueing_lock="k"), [((), {})], connection=caller),
        ):
            with pytest.raises(AlreadyEnqueued) as refused:
                defer()
            assert refused.value.job_id == waiting
        job_id = store.defer_job(new_job(queueing_lock="other"), connection=caller)
        caller.commit()
        assert query(caller, "SELECT count(*) FROM orders") == [(1,)]
    assert store.get_job(job_id) is not None and store.count_jobs()[Status.TODO] == 2


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
def test_a_defer_racing_another_for_a_queueing_lock_waits_for_it(
    store: PostgresJobStore, sql: psycopg2.extensions.connection, db_dsn: str, bulk: bool, first_commits: bool
) -> None:
    # The first defer has inserted its job but not committed: the second one's look-up cannot see
    # it, and the unique index makes its insert wait for the first transaction's end.
    outcome: dict[str, Any] = {}

    def second_defer() -> None:
        with closing(PostgresJobStore(db_dsn)) as second:
            jobs = [new_job(), new_job(queueing_lock="k")] if bulk else [new_job(queueing_lock="k")]
            try:
                outcome["job_ids"] = second.defer_jobs(jobs)
            except AlreadyEnqueued as refused:
                outcome["refused"] = refused

    with closing(psycopg2.connect(db_dsn)) as first:
        first_job = store.defer_job(new_job(queueing_lock="k"), connection=first)
        racer = threading.Thread(target=second_defer)
        racer.start()
        wait_for(lambda: waiting_on_a_lock(sql) == 1, 10, "the second defer to wait for the first one's key")
        if first_commits:
            first.commit()
        else:
            first.rollback()
        racer.join()
    if first_commits:
        refused = outcome["refused"]
        assert refused.clashes == (QueueingLockClash(2 if bulk else 1, "k", waiting_job_id=first_job),)
        assert store.count_jobs()[Status.TODO] == 1
    else:
        assert len(outcome["job_ids"]) == (2 if bulk else 1)
        assert store.get_job(outcome["job_ids"][-1]).queueing_lock == "k"  # type: ignore[union-attr]


def test_a_defer_in_the_callers_transaction_that_loses_a_race_names_the_winner_and_leaves_it_going(
    store: PostgresJobStore, sql: psycopg2.extensions.connection, db_dsn: str
) -> None:
    outcome: dict[str, Any] = {}

    def second_defer(caller: psycopg2.extensions.connection) -> None:
        try:
            store.defer_job(new_job(queueing_lock="k"), connection=caller)
        except AlreadyEnqueued as refused:
            outcome["refused"] = refused

    with closing(psycopg2.connect(db_dsn)) as first, closing(psycopg2.connect(db_dsn)) as caller:
        query(caller, "CREATE TABLE orders (id integer); INSERT INTO orders VALUES (1); SELECT 1")
        first_job = store.defer_job(new_job(queueing_lock="k"), connection=first)
        racer = threading.Thread(target=second_defer, args=(caller,))
        racer.start()
        wait_for(lambda: waiting_on_a_lock(sql) == 1, 10, "the caller's defer to wait for the first one's key")
        first.commit()
        racer.join()
        # The index refused the caller's insert; its savepoint undid it, and the defer, run once
        # more in the same transaction, found the winner waiting.
        assert outcome["refused"].clashes == (QueueingLockClash(1, "k", waiting_job_id=first_job),)
        caller.commit()
    assert query(sql, "SELECT count(*) FROM orders") == [(1,)]
    assert [job.id for job in store.claim_jobs(store.register_worker("test-host", 1, None), None, limit=5)] == [first_job]


def test_concurrent_defers_of_one_queueing_lock_let_exactly_one_through(store: PostgresJobStore, db_dsn: str) -> None:
    sessions, rounds = 6, 15
    start = threading.Barrier(sessions)
    results: list[tuple[int, str, int | None]] = []

    def defer_rounds(number: int) -> None:
        with closing(PostgresJobStore(db_dsn)) as session:
            for round_number in range(rounds):
                start.wait()
                try:
                    job_ids = session.defer_jobs([new_job(queueing_lock=f"key-{round_number}", args=(number,))])
                    results.append((round_number, "deferred", job_ids[0]))
                except AlreadyEnqueued as refused:
                    results.append((round_number, "refused", refused.job_id))

    threads = [threading.Thread(target=defer_rounds, args=(number,)) for number in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for round_number in range(rounds):
        deferred = [job_id for number, what, job_id in results if number == round_number and what == "deferred"]
        refused_with = {job_id for number, what, job_id in results if number == round_number and what == "refused"}
        assert len(deferred) == 1 and refused_with == set(deferred), (round_number, results)
    assert store.count_jobs()[Status.TODO] == rounds


def test_a_retry_racing_a_defer_of_its_queueing_lock_gives_way(
    store: PostgresJobStore, sql: psycopg2.extensions.connection, db_dsn: str
) -> None:
    worker_id = store.register_worker("test-host", 1, None)
    job_id = store.defer_job(new_job(queueing_lock="k", max_attempts=3))
    (claimed,) = store.claim_jobs(worker_id, None)
    finished: list[bool] = []
    with closing(psycopg2.connect(db_dsn)) as deferrer:
        newer = store.defer_job(new_job(queueing_lock="k"), connection=deferrer)  # not committed yet
        boom = Outcome.retry(JobError("RuntimeError", "boom"), retry_in_s=0)
        finisher = threading.Thread(target=lambda: finished.append(store.finish_job(job_id, worker_id, 1, boom)))
        finisher.start()
        wait_for(lambda: waiting_on_a_lock(sql) == 1, 10, "the retry to wait for the defer's key")
        deferrer.commit()
        finisher.join()
    assert finished == [True], "the finish gives way, it does not fail"
    superseded = store.get_job(job_id)
    assert superseded is not None and superseded.status is Status.CANCELLED
    assert superseded.last_error == JobError.superseded(newer)
    assert [attempt.outcome for attempt in store.list_attempts(job_id)] == [AttemptOutcome.FAILED]


# -- the previous release's functions (rolling upgrade) ------------------------------------------


def test_the_previous_releases_claim_and_finish_apply_the_new_rules(
    store: PostgresJobStore, sql: psycopg2.extensions.connection
) -> None:
    worker_id = store.register_worker("test-host", 1, None)
    low, high, next_high = store.defer_jobs([new_job(priority=-1), new_job(priority=5), new_job(priority=4)])
    # As a worker of the previous release prepared them (migrations 0004 and 0006).
    (claimed,) = query(sql, "SELECT id FROM cabbage_claim_jobs_v1(%s, NULL, 1)", (worker_id,))
    assert claimed == (high,)
    rows = query(sql, "SELECT finished, (job).id FROM cabbage_finish_job_v2(%s, %s, 1, 'succeeded', NULL, NULL, NULL,"
                      " NULL, NULL, NULL, 1)", (high, worker_id))
    assert rows == [(True, next_high)]
    rows = query(sql, "SELECT finished, (started).id FROM cabbage_finish_job_v1(%s, %s, 1, 'failed', NULL, 'E', 'boom',"
                      " NULL, NULL)", (next_high, worker_id))
    assert rows == [(True, None)]
    assert [attempt.outcome for job_id in (high, next_high) for attempt in store.list_attempts(job_id)] == [
        AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED
    ]
    assert store.get_job(low).status is Status.TODO  # type: ignore[union-attr]
