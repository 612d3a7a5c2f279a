"""The invariants of ARCHITECTURE section 2, each shown where PostgreSQL itself enforces it.

Test names follow the invariants' named objects (STYLE section 3): a direct SQL write that
would break an invariant is refused by the database, whatever Python would have done.
"""

from __future__ import annotations

import datetime
import itertools
import json
import time
from contextlib import closing
from typing import Any, Iterator

import psycopg2
import psycopg2.errors
import pytest

from cabbage.jobs import JobError, Outcome, Status
from cabbage.postgres import PostgresJobStore
from cabbage.sql import queries
from tests.integration.new_jobs import new_job

BOOM = JobError("RuntimeError", "boom")


def fetch_one(connection: psycopg2.extensions.connection, statement: str, params: Any = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone()


# -- invariant 1: one job per lock at a time -----------------------------------------------------


def test_one_doing_job_per_lock(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    worker_id = store.register_worker("test-host", 1, None)
    first, second = store.defer_jobs([new_job(lock="/tmp/alphabet.txt"), new_job(lock="/tmp/alphabet.txt")])
    (claimed,) = store.claim_jobs(worker_id, None, limit=10)
    assert claimed.id == first

    with pytest.raises(psycopg2.errors.UniqueViolation) as refused:
        with sql.cursor() as cursor:
            cursor.execute(
                "UPDATE cabbage_jobs SET status = 'doing', worker_id = %s WHERE id = %s", (worker_id, second)
            )
    assert refused.value.diag.constraint_name == "cabbage_jobs_one_doing_per_lock"
    assert store.get_job(second).status is Status.TODO  # type: ignore[union-attr]


def test_one_head_per_lock(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    first, second = store.defer_jobs([new_job(lock="L"), new_job(lock="L")])
    with pytest.raises(psycopg2.errors.UniqueViolation) as refused:
        with sql.cursor() as cursor:
            cursor.execute("UPDATE cabbage_jobs SET is_head = true WHERE id = %s", (second,))
    assert refused.value.diag.constraint_name == "cabbage_jobs_one_head_per_lock"


# -- invariant 2: creation order per lock, kept across retries -----------------------------------


def test_lock_order_survives_retry(store: PostgresJobStore) -> None:
    worker_id = store.register_worker("test-host", 1, None)
    line = store.defer_jobs([new_job(lock="L", args=(letter,), max_attempts=3) for letter in "abc"])

    (first,) = store.claim_jobs(worker_id, None)
    assert first.id == line[0]
    assert store.finish_job(first.id, worker_id, 1, Outcome.retry(BOOM, retry_in_s=0))
    (again,) = store.claim_jobs(worker_id, None)
    assert (again.id, again.attempts) == (line[0], 2), "a retried head keeps its place"

    store.reclaim_jobs_of([worker_id], "killed")  # a lost attempt is a retry too
    other_worker = store.register_worker("test-host", 2, None)
    ran = []
    while claimed := store.claim_jobs(other_worker, None):
        (job,) = claimed
        assert store.finish_job(job.id, other_worker, job.attempts, Outcome.succeeded())
        ran.append((job.id, job.attempts))
    assert ran == [(line[0], 3), (line[1], 1), (line[2], 1)]


# -- invariant 5: fencing ------------------------------------------------------------------------


def test_reclaimed_attempt_cannot_finish(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    lost_worker = store.register_worker("test-host", 1, None)
    job_id = store.defer_job(new_job(max_attempts=2))
    (claimed,) = store.claim_jobs(lost_worker, None)
    store.reclaim_jobs_of([lost_worker], "partitioned")
    row_after_reclaim = fetch_one(sql, "SELECT cabbage_jobs::text FROM cabbage_jobs WHERE id = %s", (job_id,))

    assert not store.finish_job(job_id, lost_worker, claimed.attempts, Outcome.succeeded())
    assert not store.finish_and_start(job_id, lost_worker, claimed.attempts, Outcome.failed(BOOM), None)[0]
    assert fetch_one(sql, "SELECT cabbage_jobs::text FROM cabbage_jobs WHERE id = %s", (job_id,)) == row_after_reclaim

    new_worker = store.register_worker("test-host", 2, None)
    (second,) = store.claim_jobs(new_worker, None)
    assert second.attempts == 2
    assert not store.finish_job(job_id, lost_worker, 2, Outcome.failed(BOOM)), "old owner, current attempt number"
    assert store.finish_job(job_id, new_worker, 2, Outcome.succeeded())
    assert store.get_job(job_id).status is Status.SUCCEEDED  # type: ignore[union-attr]


# -- invariant 6: fetch cost does not grow with the backlog --------------------------------------

BACKLOG_LOCKS = 1_000
JOBS_BEHIND_BUSY_LOCKS = 100_000
FINISHED_JOBS = 100_000


def build_backlog(connection: psycopg2.extensions.connection) -> None:
    """1,000 busy locks with 99 jobs waiting behind each, and 100,000 finished jobs."""
    with connection.cursor() as cursor:
        # The first row of each lock is its running head; the triggers queue the rest behind it.
        cursor.execute(
            """
            INSERT INTO cabbage_jobs (queue, task_name, lock, status, worker_id, attempts, started_at)
            SELECT 'queue', 'busy', 'lock-' || (i %% %(locks)s),
                   CASE WHEN i <= %(locks)s THEN 'doing' ELSE 'todo' END::cabbage_job_status,
                   CASE WHEN i <= %(locks)s THEN 1 END,
                   CASE WHEN i <= %(locks)s THEN 1 ELSE 0 END,
                   CASE WHEN i <= %(locks)s THEN now() END
              FROM generate_series(1, %(behind)s) AS i
            """,
            {"locks": BACKLOG_LOCKS, "behind": JOBS_BEHIND_BUSY_LOCKS},
        )
        cursor.execute(
            """
            INSERT INTO cabbage_jobs (queue, task_name, status, attempts, finished_at)
            SELECT 'queue', 'done', 'succeeded', 1, now() FROM generate_series(1, %(finished)s)
            """,
            {"finished": FINISHED_JOBS},
        )
        cursor.execute("ANALYZE cabbage_jobs")


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def is_claimable_index_scan(node: dict[str, Any]) -> bool:
    return node["Node Type"] in ("Index Scan", "Index Only Scan") and node["Index Name"].startswith(
        "cabbage_jobs_claimable"
    )


def is_fetch_by_id(node: dict[str, Any]) -> bool:
    return node.get("Index Name") == "cabbage_jobs_pkey" and node.get("Index Cond", "").startswith("(id = ")


def nested_plans(
    connection: psycopg2.extensions.connection, statement: str, parameters: dict[str, Any], analyze: bool = False
) -> list[dict[str, Any]]:
    """The plans PostgreSQL used for the statements that ``statement`` ran inside its functions
    and that read or write cabbage_jobs, as auto_explain reports them (its effects rolled back);
    with ``analyze``, with the rows and buffers each node read."""
    connection.notices.clear()
    settings = ["log_min_duration = 0", "log_nested_statements = on", "log_format = json"]
    if analyze:
        settings += ["log_analyze = on", "log_buffers = on", "log_timing = off"]
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            cursor.execute("LOAD 'auto_explain'")
            for setting in settings:
                cursor.execute(f"SET LOCAL auto_explain.{setting}")
            cursor.execute("SET LOCAL client_min_messages = log")
            cursor.execute(statement, parameters)
        finally:
            cursor.execute("ROLLBACK")
    reports = [json.loads(notice.partition("plan:")[2]) for notice in connection.notices if "plan:" in notice]
    # A statement that only calls a function (the prepared statement, a wrapper) reads no table.
    return [report["Plan"] for report in reports
            if any(node.get("Relation Name") == "cabbage_jobs" for node in plan_nodes(report["Plan"]))]


def prepare_worker_statements(connection: psycopg2.extensions.connection) -> None:
    """The claim and the finish are prepared statements of the worker's session."""
    with connection.cursor() as cursor:
        cursor.execute(queries["prepare_worker_statements"])


def claim_plans(
    connection: psycopg2.extensions.connection, queues: list[str] | None, limit: int, analyze: bool = False
) -> list[dict[str, Any]]:
    """The plans of one claim: a probe for the highest priority level with a claimable head,
    the claim of that level's due jobs, and a probe and a claim per lower level it needed."""
    prepare_worker_statements(connection)
    parameters = {"worker_id": 1, "queues": queues, "limit": limit, "start_all": limit > 1}  # both ways of starting
    plans = nested_plans(connection, queries["claim_jobs"], parameters, analyze)
    assert plans, "a claim reads the claimable index at least once"
    return plans


def claim_plan(connection: psycopg2.extensions.connection, queues: list[str] | None, limit: int) -> dict[str, Any]:
    """The plan of the statement that claims the due jobs of a priority level (the jobs of these
    tests share one level), among the claim's plans."""
    plans = claim_plans(connection, queues, limit)
    assert_claim_reads_claimable_index_only(plans)
    (plan,) = [plan for plan in plans if any(node["Node Type"] == "LockRows" for node in plan_nodes(plan))]
    return plan


def assert_reads_claimable_index_only(plan: dict[str, Any]) -> None:
    reads = [
        node for node in plan_nodes(plan)
        if node.get("Relation Name") == "cabbage_jobs" and node["Node Type"] != "ModifyTable"
    ]
    assert not [node for node in reads if node["Node Type"] == "Seq Scan"], json.dumps(plan)
    # The jobs are found through a claimable index; any other read of the table is the
    # UPDATE fetching those very rows by id. A rule that looked at other jobs (the doing job
    # or the older ones of a lock) would show up here as another index.
    assert any(is_claimable_index_scan(node) for node in reads), json.dumps(plan)
    assert all(is_claimable_index_scan(node) or is_fetch_by_id(node) for node in reads), json.dumps(plan)


def assert_claim_reads_claimable_index_only(plans: list[dict[str, Any]]) -> None:
    for plan in plans:
        assert_reads_claimable_index_only(plan)


def test_claim_plan_reads_an_index(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    build_backlog(sql)
    free = store.defer_jobs([new_job(task_name="free") for _ in range(3)])
    for queues, limit in itertools.product((None, ["queue"], ["queue", "other"]), (1, 10)):
        assert_claim_reads_claimable_index_only(claim_plans(sql, queues, limit))

    # And the statements find the free jobs, past 100,000 jobs behind busy locks.
    worker_id = store.register_worker("test-host", 1, None)
    claimed = store.claim_jobs(worker_id, ["queue"], limit=1) + store.claim_jobs(worker_id, None, limit=5)
    assert [job.id for job in claimed] == free


def test_claim_walks_the_index_before_statistics_catch_up(
    store: PostgresJobStore, sql: psycopg2.extensions.connection
) -> None:
    # Right after a bulk defer, before any ANALYZE, the planner underestimates the due jobs; a
    # bitmap scan would then read all of them and sort them to return the first few.
    with sql.cursor() as cursor:
        cursor.execute("ALTER TABLE cabbage_jobs SET (autovacuum_enabled = false)")
    store.defer_jobs([new_job() for _ in range(5_000)])
    plan = claim_plan(sql, None, 10)
    assert_reads_claimable_index_only(plan)
    walk = next(node for node in plan_nodes(plan) if is_claimable_index_scan(node))
    assert walk["Index Name"] == "cabbage_jobs_claimable", json.dumps(plan)



def test_claim_fetches_the_claimed_rows_by_id_on_a_small_table(
    store: PostgresJobStore, sql: psycopg2.extensions.connection
) -> None:
    # The claim's plan is built once per session. Built while the table is small, a hash join
    # of the candidates with the whole table looked cheaper than fetching them by id; kept
    # while the table grows, it would read every row on every claim.
    store.defer_jobs([new_job() for _ in range(5_000)])
    with sql.cursor() as cursor:
        cursor.execute("ANALYZE cabbage_jobs")
    for limit in (1, 10):
        assert_claim_reads_claimable_index_only(claim_plans(sql, None, limit))
        assert_claim_reads_claimable_index_only(claim_plans(sql, ["queue"], limit))

def test_finish_finds_the_job_by_its_primary_key(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    worker_id = store.register_worker("test-host", 1, None)
    store.defer_jobs([new_job() for _ in range(200)])
    running, reserved = store.claim_jobs(worker_id, None, limit=2)
    parameters = {
        "job_id": running.id, "worker_id": worker_id, "attempt": running.attempts, "status": "succeeded",
        "retry_in_s": None, "error_type": None, "error": None, "traceback": None, "next_job_id": reserved.id,
        "queues": None, "claim_limit": 0,
    }
    prepare_worker_statements(sql)
    plans = nested_plans(sql, queries["finish_job"], parameters)
    # The finish, the foreign key check of the attempt it records, then the start of the reserved job.
    assert len(plans) == 3, plans
    for plan in plans:
        reads = [node for node in plan_nodes(plan) if node.get("Relation Name") == "cabbage_jobs"
                 and node["Node Type"] != "ModifyTable"]
        assert reads and all(is_fetch_by_id(node) for node in reads), json.dumps(plan)



def test_start_finds_the_reserved_job_by_its_primary_key(
    store: PostgresJobStore, sql: psycopg2.extensions.connection
) -> None:
    # A worker that reserved a large batch holds many doing jobs: the fence must not make the
    # planner read all of them through the held-by-worker index to start one.
    worker_id = store.register_worker("test-host", 1, None)
    store.defer_jobs([new_job() for _ in range(3_000)])
    reserved = store.claim_jobs(worker_id, None, limit=2_000)[1:]
    (plan,) = nested_plans(sql, queries["start_job"], {"job_id": reserved[-1].id, "worker_id": worker_id})
    reads = [node for node in plan_nodes(plan) if node.get("Relation Name") == "cabbage_jobs"
             and node["Node Type"] != "ModifyTable"]
    assert reads and all(is_fetch_by_id(node) for node in reads), json.dumps(plan)
    started = store.start_job(reserved[-1].id, worker_id)
    assert started is not None and started.attempts == 1 and started.started_at is not None

# -- invariant 7: the database clock -------------------------------------------------------------


def test_database_clock_for_schedules(
    store: PostgresJobStore, sql: psycopg2.extensions.connection, db_dsn: str
) -> None:
    # In a transaction now() stands still at its start: a schedule computed from Python's
    # clock, which moves on, could not equal it.
    with closing(psycopg2.connect(db_dsn)) as caller:
        with caller, caller.cursor() as cursor:
            cursor.execute("SELECT now()")
            (transaction_start,) = cursor.fetchone()
            time.sleep(0.05)
            in_an_hour, in_a_month = store.defer_jobs(
                [new_job(schedule_in={"seconds": 3600.0}), new_job(schedule_in={"months": 1})], connection=caller
            )
            cursor.execute("SELECT now() + interval '1 month'")
            (month_later,) = cursor.fetchone()
    assert store.get_job(in_an_hour).scheduled_at == transaction_start + datetime.timedelta(hours=1)  # type: ignore[union-attr]
    assert store.get_job(in_a_month).scheduled_at == month_later  # type: ignore[union-attr]
    assert store.get_job(in_an_hour).created_at == transaction_start  # type: ignore[union-attr]

    worker_id = store.register_worker("test-host", 1, None)
    job_id = store.defer_job(new_job(max_attempts=2))
    store.claim_jobs(worker_id, None)
    assert store.finish_job(job_id, worker_id, 1, Outcome.retry(BOOM, retry_in_s=600))
    (delay_s,) = fetch_one(sql, "SELECT extract(epoch FROM scheduled_at - now()) FROM cabbage_jobs WHERE id = %s", (job_id,))
    assert 590 < delay_s <= 600

    # Heartbeat ages and staleness: the worker's heartbeat, 100 s old by the database's clock.
    with sql.cursor() as cursor:
        cursor.execute("UPDATE cabbage_workers SET last_heartbeat_at = now() - interval '100 s' WHERE id = %s", (worker_id,))
    (info,) = store.list_workers()
    assert 100 <= info.heartbeat_age_s < 110
    assert store.reclaim_stale_workers(heartbeat_timeout_s=200) == []
    assert store.list_workers() != []
    store.reclaim_stale_workers(heartbeat_timeout_s=50)
    assert store.list_workers() == []


# -- queueing locks (migration 0007) -------------------------------------------------------------


def test_one_todo_job_per_queueing_lock(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    waiting = store.defer_job(new_job(queueing_lock="refresh"))
    for statement, params in (
        ("INSERT INTO cabbage_jobs (task_name, queueing_lock) VALUES ('t', 'refresh')", None),
        ("INSERT INTO cabbage_jobs (task_name, queueing_lock) VALUES ('t', 'k'), ('t', 'k')", None),
    ):
        with pytest.raises(psycopg2.errors.UniqueViolation) as refused:
            with sql.cursor() as cursor:
                cursor.execute(statement, params)
        assert refused.value.diag.constraint_name == "cabbage_jobs_one_todo_per_queueing_lock"
    # Only todo jobs hold it: a finished one, or one running, does not.
    worker_id = store.register_worker("test-host", 1, None)
    (claimed,) = store.claim_jobs(worker_id, None)
    assert claimed.id == waiting
    with sql.cursor() as cursor:
        cursor.execute("INSERT INTO cabbage_jobs (task_name, queueing_lock) VALUES ('t', 'refresh')")
        cursor.execute("INSERT INTO cabbage_jobs (task_name, queueing_lock, status) VALUES ('t', 'refresh', 'failed')")
    assert store.count_jobs() == {**{status: 0 for status in Status}, Status.TODO: 1, Status.DOING: 1, Status.FAILED: 1}


# -- invariant 6 with priorities (migration 0007) ------------------------------------------------

HIGHER_PRIORITY_JOBS_NOT_DUE = 100_000


def add_higher_priority_jobs_due_tomorrow(connection: psycopg2.extensions.connection) -> None:
    """100,000 jobs of three priority levels above the default, each heading its line, due tomorrow."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO cabbage_jobs (queue, task_name, priority, scheduled_at)
            SELECT 'queue', 'tomorrow', 5 + i %% 3, now() + interval '1 day' FROM generate_series(1, %(jobs)s) AS i
            """,
            {"jobs": HIGHER_PRIORITY_JOBS_NOT_DUE},
        )
        cursor.execute("ANALYZE cabbage_jobs")


def pages_touched(plans: list[dict[str, Any]]) -> int:
    """The index and table pages the statements of one call (a claim, say) touched, all nodes together."""
    return sum(plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0) for plan in plans)


def test_the_claim_reads_one_index_with_priorities(store: PostgresJobStore, sql: psycopg2.extensions.connection) -> None:
    build_backlog(sql)
    free = store.defer_jobs([new_job(task_name="free", priority=level) for level in (0, 0, -3)])
    shapes = list(itertools.product((None, ["queue"], ["queue", "other"]), (1, 10)))
    before = {repr(shape): pages_touched(claim_plans(sql, *shape, analyze=True)) for shape in shapes}
    # Ahead of the free jobs in the index: 100,000 jobs of higher priorities (three levels) that
    # are due only tomorrow (retries in their backoff, say). A single walk in (priority DESC,
    # scheduled_at, id) order would step over all of them on every claim: some 900 pages more.
    add_higher_priority_jobs_due_tomorrow(sql)
    for shape in shapes:
        plans = claim_plans(sql, *shape, analyze=True)
        assert_claim_reads_claimable_index_only(plans)
        # A probe per queue and an empty range per level above: 20 to 50 pages more in all.
        assert pages_touched(plans) - before[repr(shape)] < 150, json.dumps(plans)

    worker_id = store.register_worker("test-host", 1, None)
    claimed = store.claim_jobs(worker_id, ["queue"], limit=2) + store.claim_jobs(worker_id, None, limit=5)
    assert [job.id for job in claimed] == free


# -- invariant 6 for the look at when the next job is due ----------------------------------------


def test_the_next_due_job_is_found_through_the_claimable_indexes(
    store: PostgresJobStore, sql: psycopg2.extensions.connection
) -> None:
    build_backlog(sql)
    soon = store.defer_job(new_job(task_name="soon", schedule_in={"seconds": 60.0}))
    shapes: list[list[str] | None] = [None, ["queue"], ["queue", "other"]]
    prepare_worker_statements(sql)

    def look_plans(queues: list[str] | None) -> list[dict[str, Any]]:
        return nested_plans(sql, queries["seconds_until_next_due"], {"queues": queues}, analyze=True)

    before = {repr(queues): pages_touched(look_plans(queues)) for queues in shapes}
    # A look that read every todo head, or sorted them by scheduled_at, would grow with these.
    add_higher_priority_jobs_due_tomorrow(sql)
    for queues in shapes:
        plans = look_plans(queues)
        assert plans and not [node for plan in plans for node in plan_nodes(plan) if node["Node Type"] == "Sort"]
        for plan in plans:
            assert_reads_claimable_index_only(plan)
        # A probe per level in use, per queue asked for: a few pages per level.
        assert pages_touched(plans) - before[repr(queues)] < 60, json.dumps(plans)
        assert 50 < store.seconds_until_next_due(queues) <= 60, f"job {soon}, the earliest of every level"  # type: ignore[operator]
