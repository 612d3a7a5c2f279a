"""The JobStore contract, checked against both stores with the same tests.

The ``store`` fixture is parametrised ``memory`` and ``postgres``; ``-k memory`` runs without
PostgreSQL. Tests use the contract of cabbage/store.py only, never a store's internals; the
operator's retry and cancel go through ``cabbage.admin.Admin`` for PostgreSQL and through the
in-memory store's methods of the same names. Time passes through ``time_passes(seconds)``, not
sleeps: the in-memory store's ManualClock moves forward, the database's rows move back.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from contextlib import closing
from typing import Any, Callable, Iterator

import pendulum
import pytest

from cabbage import schedules
from cabbage.exceptions import (
    AlreadyEnqueued,
    ArgumentsTooLargeError,
    CabbageError,
    JobNotFound,
    JobStateError,
    QueueingLockClash,
    ScheduleError,
)
from cabbage.jobs import FINISHED_STATUSES, KEPT_ATTEMPTS, AttemptOutcome, Job, JobError, NewJob, Outcome, Status
from cabbage.periodic import PeriodicSchedule, PeriodicTick, RecordedTick, RefusedTick
from cabbage.retention import prune_in_batches
from cabbage.store import JobStore
from cabbage.testing import InMemoryJobStore, ManualClock
from tests.waiting import wait_for

BOOM = JobError("RuntimeError", "boom", "Traceback (most recent call last): ...")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[JobStore]:
    if request.param == "memory":
        yield InMemoryJobStore(clock=clock)
        return
    # Imported and requested here only, so that `-k memory` needs neither psycopg2 nor a server.
    from cabbage.postgres import PostgresJobStore

    postgres_store = PostgresJobStore(request.getfixturevalue("db_dsn"))
    yield postgres_store
    postgres_store.close()


@pytest.fixture
def store_with_limit(request: pytest.FixtureRequest, store: JobStore, clock: ManualClock) -> Iterator[Callable[[int], JobStore]]:
    """Makes a store of the same kind as ``store``, with another ``max_arguments_bytes``."""
    made: list[JobStore] = []

    def make(max_arguments_bytes: int) -> JobStore:
        if isinstance(store, InMemoryJobStore):
            return InMemoryJobStore(clock=clock, max_arguments_bytes=max_arguments_bytes)
        from cabbage.postgres import PostgresJobStore

        made.append(PostgresJobStore(request.getfixturevalue("db_dsn"), max_arguments_bytes=max_arguments_bytes))
        return made[-1]

    yield make
    for other in made:
        other.close()


@pytest.fixture
def operator(request: pytest.FixtureRequest, store: JobStore) -> Iterator[Any]:
    """What `cabbage jobs retry|cancel` acts through: cabbage.admin.Admin for PostgreSQL; the
    in-memory store offers the same retry_jobs and cancel_jobs itself."""
    if isinstance(store, InMemoryJobStore):
        yield store
        return
    from cabbage.admin import Admin

    admin = Admin.connect(request.getfixturevalue("db_dsn"))
    yield admin
    admin.close()


@pytest.fixture
def time_passes(request: pytest.FixtureRequest, store: JobStore, clock: ManualClock) -> Callable[[float], None]:
    """Makes ``seconds`` pass for the store: heartbeats, schedules and finishes grow older."""
    if isinstance(store, InMemoryJobStore):
        return clock.advance
    import psycopg2

    dsn = request.getfixturevalue("db_dsn")

    def shift_rows_back(seconds: float) -> None:
        with closing(psycopg2.connect(dsn)) as connection, connection, connection.cursor() as cursor:
            cursor.execute(queries_moving_time_back, {"seconds": seconds})

    return shift_rows_back


# What a store's clock moving forward looks like from its rows: every time in them moves back.
queries_moving_time_back = """
    UPDATE cabbage_workers
       SET started_at = started_at - make_interval(secs => %(seconds)s),
           last_heartbeat_at = last_heartbeat_at - make_interval(secs => %(seconds)s);
    UPDATE cabbage_jobs
       SET created_at = created_at - make_interval(secs => %(seconds)s),
           scheduled_at = scheduled_at - make_interval(secs => %(seconds)s),
           started_at = started_at - make_interval(secs => %(seconds)s),
           finished_at = finished_at - make_interval(secs => %(seconds)s);
    UPDATE cabbage_periodic_schedules
       SET first_declared_at = first_declared_at - make_interval(secs => %(seconds)s),
           last_declared_at = last_declared_at - make_interval(secs => %(seconds)s);
    UPDATE cabbage_periodic_ticks
       SET tick_at = tick_at - make_interval(secs => %(seconds)s),
           recorded_at = recorded_at - make_interval(secs => %(seconds)s);
"""


@pytest.fixture
def worker_id(store: JobStore) -> int:
    return store.register_worker("test-host", 4242, None)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_job(task_name: str = "write_alphabet", **fields: object) -> NewJob:
    fields.setdefault("queue", "queue")
    return NewJob(task_name=task_name, **fields)  # type: ignore[arg-type]


def claim_one(store: JobStore, worker_id: int, queues: list[str] | None = None) -> Job | None:
    claimed = store.claim_jobs(worker_id, queues)
    assert len(claimed) <= 1
    return claimed[0] if claimed else None


def run_line(store: JobStore, worker_id: int) -> list[int]:
    """Claims and succeeds every due job, one at a time; returns their ids in run order."""
    order = []
    while (job := claim_one(store, worker_id)) is not None:
        assert store.finish_job(job.id, worker_id, job.attempts, Outcome.succeeded())
        order.append(job.id)
    return order


def every_defer_path(store: JobStore, job: NewJob) -> list[Callable[[], object]]:
    """The ways ``job`` reaches a store: alone, in a batch after a good job, and as the
    second call of a defer_calls whose first is good (the batch must then insert nothing)."""
    return [
        lambda: store.defer_job(job),
        lambda: store.defer_jobs([new_job(), job]),
        lambda: store.defer_calls(job, [((), {}), (job.args, job.kwargs)]),
    ]


def assert_close(actual: datetime.datetime, expected: datetime.datetime, within_s: float = 60.0) -> None:
    assert abs((actual - expected).total_seconds()) < within_s, f"{actual} is not within {within_s} s of {expected}"


# -- statuses through a job's life ---------------------------------------------------------------


def test_a_job_goes_todo_doing_succeeded(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(args=("a",)))
    deferred = store.get_job(job_id)
    assert deferred is not None
    assert (deferred.status, deferred.attempts, deferred.worker_id, deferred.started_at) == (Status.TODO, 0, None, None)
    assert deferred.finished_at is None and not deferred.is_started

    claimed = claim_one(store, worker_id)
    assert claimed is not None and claimed.id == job_id
    assert (claimed.status, claimed.attempts, claimed.worker_id) == (Status.DOING, 1, worker_id)
    assert claimed.is_started and claimed.started_at is not None

    assert store.finish_job(job_id, worker_id, 1, Outcome.succeeded())
    finished = store.get_job(job_id)
    assert finished is not None
    assert (finished.status, finished.attempts) == (Status.SUCCEEDED, 1)
    assert finished.finished_at is not None and finished.last_error is None


def test_a_failed_attempt_stores_its_error(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job())
    job = claim_one(store, worker_id)
    assert job is not None
    assert store.finish_job(job_id, worker_id, job.attempts, Outcome.failed(BOOM))
    failed = store.get_job(job_id)
    assert failed is not None
    assert failed.status is Status.FAILED and failed.finished_at is not None
    assert failed.last_error == BOOM


def test_a_retried_job_is_todo_again_with_its_error_and_next_attempt(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=3))
    first = claim_one(store, worker_id)
    assert first is not None
    assert store.finish_job(job_id, worker_id, 1, Outcome.retry(BOOM, retry_in_s=0))
    retried = store.get_job(job_id)
    assert retried is not None
    assert (retried.status, retried.attempts, retried.last_error) == (Status.TODO, 1, BOOM)
    assert retried.finished_at is None

    second = claim_one(store, worker_id)
    assert second is not None and (second.id, second.attempts) == (job_id, 2)


def test_a_retry_later_is_not_due_before_its_time(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=3))
    assert claim_one(store, worker_id) is not None
    assert store.finish_job(job_id, worker_id, 1, Outcome.retry(BOOM, retry_in_s=3600))
    retried = store.get_job(job_id)
    assert retried is not None
    assert_close(retried.scheduled_at, utcnow() + datetime.timedelta(hours=1))
    assert claim_one(store, worker_id) is None


def test_arguments_come_back_as_json_would_carry_them(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(
        new_job(args=("a", 1, 2.5, None, [1, (2, 3)]), kwargs={"floor": {"level": True}, "pair": (1, 2)})
    )
    job = claim_one(store, worker_id)
    assert job is not None and job.id == job_id
    assert job.args == ("a", 1, 2.5, None, [1, [2, 3]])
    assert dict(job.kwargs) == {"floor": {"level": True}, "pair": [1, 2]}
    assert job.task_name == "write_alphabet" and job.queue == "queue"


def test_keyword_arguments_come_back_in_jsonb_key_order(store: JobStore) -> None:
    job_id = store.defer_job(new_job(kwargs={"zz": 1, "b": {"long": 1, "a": 2}, "a": 3}))
    job = store.get_job(job_id)
    assert job is not None
    # jsonb keeps shorter keys first, then orders them by bytes.
    assert list(job.kwargs) == ["a", "b", "zz"] and list(job.kwargs["b"]) == ["a", "long"]


def test_numbers_come_back_as_jsonb_writes_them(store: JobStore) -> None:
    job_id = store.defer_job(new_job(args=(10.0, 1.5, 1e-07, 1e20, -2.5e16, 2**70)))
    job = store.get_job(job_id)
    assert job is not None
    # jsonb writes a float Python printed with a positive exponent without a decimal point.
    assert job.args == (10.0, 1.5, 1e-07, 10**20, -25 * 10**15, 2**70)
    assert [type(value) for value in job.args] == [float, float, float, int, int, int]


def test_deferring_many_returns_their_ids_in_order(store: JobStore) -> None:
    ids = store.defer_jobs([new_job(args=(letter,)) for letter in "abcd"])
    assert len(ids) == 4 and ids == sorted(ids)
    deferred = [store.get_job(job_id) for job_id in ids]
    assert [job.args for job in deferred if job is not None] == [("a",), ("b",), ("c",), ("d",)]
    assert store.defer_jobs([]) == []


def test_deferring_calls_stores_one_job_per_call_like_the_template_in_order(store: JobStore, worker_id: int) -> None:
    template = new_job(queue="mail", lock="L", max_attempts=3, schedule_in={"seconds": 3600.0})
    ids = store.defer_calls(template, [(["a"], {}), ((), {"floor": "c"}), (("b",), {"wall": 1})])
    assert len(ids) == 3 and ids == sorted(ids)
    deferred = [store.get_job(job_id) for job_id in ids]
    assert [(job.args, job.kwargs) for job in deferred if job is not None] == [
        (("a",), {}), ((), {"floor": "c"}), (("b",), {"wall": 1})
    ]
    assert {(job.queue, job.lock, job.max_attempts, job.status) for job in deferred if job is not None} == {
        ("mail", "L", 3, Status.TODO)
    }
    for job in deferred:
        assert job is not None
        assert_close(job.scheduled_at, utcnow() + datetime.timedelta(hours=1))
    assert claim_one(store, worker_id) is None, "scheduled an hour from now"
    assert store.defer_calls(template, []) == []


# -- lock lines ---------------------------------------------------------------------------------


def test_one_doing_job_per_lock(store: JobStore, worker_id: int) -> None:
    other_worker = store.register_worker("test-host", 4243, None)
    store.defer_jobs([new_job(lock="/tmp/alphabet.txt", args=(letter,)) for letter in "abc"])
    free_id = store.defer_job(new_job(args=("free",)))

    claimed = store.claim_jobs(worker_id, None, limit=10)
    assert [job.args for job in claimed] == [("a",), ("free",)]
    assert store.claim_jobs(other_worker, None, limit=10) == []
    assert store.count_jobs()[Status.DOING] == 2
    assert free_id in {job.id for job in claimed}


def test_a_lock_line_runs_in_creation_order(store: JobStore, worker_id: int) -> None:
    line = [store.defer_job(new_job(lock="/tmp/alphabet.txt", args=(letter,))) for letter in "abcd"]
    other_line = store.defer_job(new_job(lock="another"))
    ran = run_line(store, worker_id)
    assert [job_id for job_id in ran if job_id in line] == line
    assert other_line in ran


def test_an_earlier_job_of_a_line_scheduled_later_holds_the_line(store: JobStore, worker_id: int) -> None:
    later = store.defer_job(new_job(lock="L", scheduled_at=utcnow() + datetime.timedelta(hours=1)))
    store.defer_job(new_job(lock="L"))
    assert claim_one(store, worker_id) is None
    assert store.get_job(later).status is Status.TODO  # type: ignore[union-attr]


def test_a_retried_job_keeps_its_place_in_line(store: JobStore, worker_id: int) -> None:
    first, second = store.defer_jobs([new_job(lock="L", max_attempts=2), new_job(lock="L")])
    assert claim_one(store, worker_id).id == first  # type: ignore[union-attr]
    assert store.finish_job(first, worker_id, 1, Outcome.retry(BOOM, retry_in_s=3600))
    assert claim_one(store, worker_id) is None, "the next job of the line overtook a retried head"

    head_due_now = store.defer_job(new_job(lock="M", max_attempts=2))
    store.defer_job(new_job(lock="M"))
    assert claim_one(store, worker_id).id == head_due_now  # type: ignore[union-attr]
    assert store.finish_job(head_due_now, worker_id, 1, Outcome.retry(BOOM, retry_in_s=0))
    again = claim_one(store, worker_id)
    assert again is not None and (again.id, again.attempts) == (head_due_now, 2)
    assert store.get_job(second).status is Status.TODO  # type: ignore[union-attr]


def test_failing_the_head_frees_the_line(store: JobStore, worker_id: int) -> None:
    first, second = store.defer_jobs([new_job(lock="L"), new_job(lock="L")])
    assert claim_one(store, worker_id).id == first  # type: ignore[union-attr]
    assert store.finish_job(first, worker_id, 1, Outcome.failed(BOOM))
    assert claim_one(store, worker_id).id == second  # type: ignore[union-attr]


def test_a_job_deferred_behind_a_running_head_waits(store: JobStore, worker_id: int) -> None:
    first = store.defer_job(new_job(lock="L"))
    assert claim_one(store, worker_id).id == first  # type: ignore[union-attr]
    second = store.defer_job(new_job(lock="L"))
    assert claim_one(store, worker_id) is None
    assert store.finish_job(first, worker_id, 1, Outcome.succeeded())
    assert claim_one(store, worker_id).id == second  # type: ignore[union-attr]


def test_cancelling_the_head_frees_the_line(store: JobStore, operator: Any, worker_id: int) -> None:
    head = store.defer_job(new_job(lock="L", scheduled_at=utcnow() + datetime.timedelta(hours=1)))
    behind = store.defer_job(new_job(lock="L"))
    assert claim_one(store, worker_id) is None
    assert operator.cancel_jobs([head]) == [head]
    cancelled = store.get_job(head)
    assert cancelled is not None and cancelled.status is Status.CANCELLED and cancelled.finished_at is not None
    assert claim_one(store, worker_id).id == behind  # type: ignore[union-attr]


def test_a_doing_job_cannot_be_cancelled(store: JobStore, operator: Any, worker_id: int) -> None:
    waiting, running = store.defer_jobs([new_job(scheduled_at=utcnow() + datetime.timedelta(hours=1)), new_job()])
    assert claim_one(store, worker_id).id == running  # type: ignore[union-attr]
    with pytest.raises(JobStateError, match=f"job {running} is doing"):
        operator.cancel_jobs([waiting, running])
    with pytest.raises(JobNotFound):
        operator.cancel_jobs([waiting, running + 1000])
    statuses = [store.get_job(job_id).status for job_id in (waiting, running)]  # type: ignore[union-attr]
    assert statuses == [Status.TODO, Status.DOING]


def test_a_job_retried_by_hand_waits_behind_the_current_head(store: JobStore, operator: Any, worker_id: int) -> None:
    first, second, third = store.defer_jobs([new_job(lock="L"), new_job(lock="L"), new_job(lock="L")])
    assert claim_one(store, worker_id).id == first  # type: ignore[union-attr]
    assert store.finish_job(first, worker_id, 1, Outcome.failed(BOOM))
    assert claim_one(store, worker_id).id == second  # type: ignore[union-attr]

    assert operator.retry_jobs([first]) == [first]
    requeued = store.get_job(first)
    assert requeued is not None and (requeued.status, requeued.attempts, requeued.finished_at) == (Status.TODO, 1, None)
    assert claim_one(store, worker_id) is None, "a re-queued job overtook the running head"
    assert store.finish_job(second, worker_id, 1, Outcome.succeeded())
    assert run_line(store, worker_id) == [first, third], "the re-queued job takes the place its id gives it"
    assert store.get_job(first).attempts == 2  # type: ignore[union-attr]


def test_a_job_retried_by_hand_heads_an_empty_line(store: JobStore, operator: Any, worker_id: int) -> None:
    job_id = store.defer_job(new_job(lock="L"))
    assert claim_one(store, worker_id) is not None
    assert store.finish_job(job_id, worker_id, 1, Outcome.failed(BOOM))
    with pytest.raises(JobStateError):
        operator.cancel_jobs([job_id])
    assert operator.retry_jobs([job_id]) == [job_id]
    again = claim_one(store, worker_id)
    assert again is not None and (again.id, again.attempts, again.last_error) == (job_id, 2, BOOM)


# -- scheduling and claim order -----------------------------------------------------------------


def test_scheduled_in_the_past_is_due_now(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(scheduled_at=utcnow() - datetime.timedelta(days=1)))
    assert claim_one(store, worker_id).id == job_id  # type: ignore[union-attr]


def test_scheduled_in_the_future_is_not_claimable(store: JobStore, worker_id: int) -> None:
    at = datetime.datetime(2038, 1, 19, 3, 14, 7, tzinfo=datetime.timezone.utc)
    job_id = store.defer_job(new_job(scheduled_at=at))
    assert claim_one(store, worker_id) is None
    job = store.get_job(job_id)
    assert job is not None and job.scheduled_at == at and job.status is Status.TODO


def test_the_first_and_last_times_of_the_schedule_range_are_kept(store: JobStore, worker_id: int) -> None:
    earliest, latest = store.defer_jobs(
        [new_job(scheduled_at=schedules.EARLIEST_SCHEDULED_AT), new_job(scheduled_at=schedules.LATEST_SCHEDULED_AT)]
    )
    assert store.get_job(earliest).scheduled_at == schedules.EARLIEST_SCHEDULED_AT  # type: ignore[union-attr]
    assert store.get_job(latest).scheduled_at == schedules.LATEST_SCHEDULED_AT  # type: ignore[union-attr]
    assert claim_one(store, worker_id).id == earliest  # type: ignore[union-attr]
    assert claim_one(store, worker_id) is None


@pytest.mark.parametrize(
    "schedule_in, expected_delay",
    [
        ({"seconds": 30.0}, {"seconds": 30}),
        ({"seconds": 5400.0}, {"hours": 1, "minutes": 30}),  # the how-to's {"hours": 1, "minutes": 30}
        ({"months": 1}, {"months": 1}),
        ({"years": 1, "months": 2, "seconds": 60.0}, {"years": 1, "months": 2, "minutes": 1}),
    ],
)
def test_schedule_in_counts_from_the_store_clock(
    store: JobStore, worker_id: int, schedule_in: dict, expected_delay: dict
) -> None:
    job_id = store.defer_job(new_job(schedule_in=schedule_in))
    expected = pendulum.now("UTC").add(**expected_delay)
    assert_close(store.get_job(job_id).scheduled_at, expected, within_s=5)  # type: ignore[union-attr]
    assert claim_one(store, worker_id) is None


def test_schedule_in_nothing_is_due_now(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(schedule_in={"seconds": 0.0}))
    assert claim_one(store, worker_id).id == job_id  # type: ignore[union-attr]


def test_due_jobs_come_by_scheduled_at_then_creation_order(store: JobStore, worker_id: int) -> None:
    now = utcnow()
    one_minute_ago = store.defer_job(new_job(scheduled_at=now - datetime.timedelta(minutes=1)))
    two_minutes_ago = store.defer_job(new_job(scheduled_at=now - datetime.timedelta(minutes=2)))
    due_now = store.defer_job(new_job())
    also_two_minutes_ago = store.defer_job(new_job(scheduled_at=now - datetime.timedelta(minutes=2)))
    assert run_line(store, worker_id) == [two_minutes_ago, also_two_minutes_ago, one_minute_ago, due_now]


def test_claim_takes_only_the_queues_asked_for(store: JobStore, worker_id: int) -> None:
    mail = store.defer_job(new_job(queue="mail"))
    sms = store.defer_job(new_job(queue="sms"))
    assert store.claim_jobs(worker_id, ["other"]) == []
    assert store.claim_jobs(worker_id, []) == [], "no queue named: nothing, not everything"
    assert store.claim_jobs(worker_id, None, limit=0) == []
    assert claim_one(store, worker_id, ["sms"]).id == sms  # type: ignore[union-attr]
    assert claim_one(store, worker_id, ["sms", "mail"]).id == mail  # type: ignore[union-attr]


# -- when the next job is due -------------------------------------------------------------------


def test_seconds_until_next_due_counts_down_on_the_store_clock(
    store: JobStore, time_passes: Callable[[float], None]
) -> None:
    assert store.seconds_until_next_due(None) is None, "no job waits"
    store.defer_job(new_job(schedule_in={"seconds": 600.0}))
    assert 590 < store.seconds_until_next_due(None) <= 600  # type: ignore[operator]
    time_passes(400)
    assert 190 < store.seconds_until_next_due(["queue"]) <= 200  # type: ignore[operator]
    time_passes(300)
    assert store.seconds_until_next_due(None) == 0.0, "overdue is due now"


def test_the_next_due_job_is_the_earliest_of_every_priority_level_of_the_queues_asked_for(store: JobStore) -> None:
    store.defer_jobs([
        new_job(queue="mail", priority=10, schedule_in={"seconds": 3600.0}),
        new_job(queue="mail", priority=-1, schedule_in={"seconds": 600.0}),
        new_job(queue="sms", priority=5, schedule_in={"seconds": 60.0}),
    ])  # fmt: skip
    assert 50 < store.seconds_until_next_due(None) <= 60  # type: ignore[operator]
    assert 590 < store.seconds_until_next_due(["mail"]) <= 600  # type: ignore[operator]
    assert 50 < store.seconds_until_next_due(["mail", "sms", "other"]) <= 60  # type: ignore[operator]
    assert store.seconds_until_next_due(["other"]) is None
    assert store.seconds_until_next_due([]) is None, "no queue named: nothing, not everything"


def test_only_a_job_a_claim_could_take_once_due_counts_as_next_due(store: JobStore, worker_id: int) -> None:
    running, behind = store.defer_jobs([new_job(lock="L"), new_job(lock="L")])
    assert claim_one(store, worker_id).id == running  # type: ignore[union-attr]
    store.defer_job(new_job(task_name="done"))
    assert store.finish_job(claim_one(store, worker_id).id, worker_id, 1, Outcome.succeeded())  # type: ignore[union-attr]
    # Neither the running head, nor the job due behind it, nor the finished one.
    assert store.seconds_until_next_due(None) is None
    assert store.finish_job(running, worker_id, 1, Outcome.succeeded())
    assert store.seconds_until_next_due(None) == 0.0, f"job {behind} heads its line now, due since its defer"


# -- batches: reserved and started jobs ---------------------------------------------------------


def test_a_batch_claim_starts_the_first_and_reserves_the_rest(store: JobStore, worker_id: int) -> None:
    ids = store.defer_jobs([new_job(args=(n,)) for n in range(4)])
    claimed = store.claim_jobs(worker_id, None, limit=3)
    assert [job.id for job in claimed] == ids[:3]
    assert all(job.status is Status.DOING and job.worker_id == worker_id for job in claimed)
    first, *reserved = claimed
    assert first.is_started and first.attempts == 1
    assert all(not job.is_started and job.attempts == 0 and job.started_at is None for job in reserved)
    assert store.count_jobs() == {**{status: 0 for status in Status}, Status.TODO: 1, Status.DOING: 3}


def test_start_job_begins_a_reserved_attempt(store: JobStore, worker_id: int) -> None:
    other_worker = store.register_worker("test-host", 4243, None)
    store.defer_jobs([new_job(), new_job()])
    first, reserved = store.claim_jobs(worker_id, None, limit=2)
    assert store.start_job(reserved.id, other_worker) is None
    started = store.start_job(reserved.id, worker_id)
    assert started is not None and started.is_started and started.attempts == 1
    assert store.start_job(reserved.id, worker_id) is None, "a started job is not reserved any more"
    assert store.start_job(first.id, worker_id) is None


def test_release_jobs_puts_reserved_jobs_back_without_an_attempt(store: JobStore, worker_id: int) -> None:
    other_worker = store.register_worker("test-host", 4243, None)
    store.defer_jobs([new_job(), new_job(lock="L"), new_job(lock="L")])
    started, reserved = store.claim_jobs(worker_id, None, limit=2)
    assert store.release_jobs([reserved.id], other_worker) == 0
    assert store.release_jobs([started.id, reserved.id], worker_id) == 1
    released = store.get_job(reserved.id)
    assert released is not None
    assert (released.status, released.attempts, released.worker_id) == (Status.TODO, 0, None)
    assert store.get_job(started.id).status is Status.DOING  # type: ignore[union-attr]
    again = store.claim_jobs(other_worker, None, limit=5)
    assert [(job.id, job.attempts) for job in again] == [(reserved.id, 1)], "the released head keeps its line"


def test_unstart_jobs_gives_a_lost_workers_unbegun_jobs_back_without_an_attempt(store: JobStore, worker_id: int) -> None:
    other_worker = store.register_worker("test-host", 4243, None)
    store.defer_jobs([new_job(max_attempts=1), new_job(max_attempts=1, lock="L"), new_job(lock="L"), new_job(), new_job()])
    running, prefetched, also_prefetched = store.claim_jobs(worker_id, None, limit=3, start_all=True)
    (others,) = store.claim_jobs(other_worker, None, limit=1, start_all=True)
    # Fenced: another worker's job, a job not started, an unknown id change nothing.
    assert store.unstart_jobs([others.id, 10**9], worker_id) == 0
    assert store.unstart_jobs([prefetched.id, others.id], worker_id) == 1
    assert store.unstart_jobs([prefetched.id], worker_id) == 0, "reserved already"
    unstarted = store.get_job(prefetched.id)
    assert unstarted is not None
    assert (unstarted.status, unstarted.attempts, unstarted.started_at, unstarted.worker_id) == (Status.DOING, 0, None, worker_id)
    reclaimed = {job.job_id: job for job in store.reclaim_jobs_of([worker_id], "killed")}
    assert set(reclaimed) == {running.id, prefetched.id, also_prefetched.id}
    # The one that ran used its only attempt; the one never begun is back in line, unused.
    assert store.get_job(running.id).status is Status.FAILED  # type: ignore[union-attr]
    back = store.get_job(prefetched.id)
    assert back is not None and (back.status, back.attempts, back.last_error) == (Status.TODO, 0, None)
    assert [job.id for job in store.claim_jobs(other_worker, None, limit=5) if job.lock == "L"] == [prefetched.id]
    assert store.get_job(others.id).attempts == 1  # type: ignore[union-attr]
    assert store.unstart_jobs([], worker_id) == 0


def test_finish_and_start_finishes_one_and_starts_the_next(store: JobStore, worker_id: int) -> None:
    store.defer_jobs([new_job(), new_job(), new_job()])
    first, second, third = store.claim_jobs(worker_id, None, limit=3)
    finished, started = store.finish_and_start(first.id, worker_id, 1, Outcome.succeeded(), second.id)
    assert finished and started is not None and started.id == second.id and started.attempts == 1
    assert store.get_job(first.id).status is Status.SUCCEEDED  # type: ignore[union-attr]

    finished, started = store.finish_and_start(second.id, worker_id, 1, Outcome.failed(BOOM), None)
    assert finished and started is None
    assert store.get_job(second.id).status is Status.FAILED  # type: ignore[union-attr]
    assert not store.get_job(third.id).is_started  # type: ignore[union-attr]


def test_finish_and_claim_finishes_one_and_claims_the_next(store: JobStore, worker_id: int) -> None:
    first_id, *later_ids = store.defer_jobs([new_job() for _ in range(4)] + [new_job(queue="other")])
    (first,) = store.claim_jobs(worker_id, ["queue"], limit=1)
    assert first.id == first_id
    finished, claimed = store.finish_and_claim(first.id, worker_id, 1, Outcome.succeeded(), ["queue"], 2)
    assert finished and store.get_job(first.id).status is Status.SUCCEEDED  # type: ignore[union-attr]
    # As claim_jobs: in order, the first started, the rest reserved, only the queues asked for.
    assert [job.id for job in claimed] == later_ids[:2]
    assert [(job.status, job.attempts, job.is_started) for job in claimed] == [
        (Status.DOING, 1, True), (Status.DOING, 0, False),
    ]
    assert store.held_jobs(worker_id) == claimed

    finished, claimed = store.finish_and_claim(claimed[0].id, worker_id, 1, Outcome.succeeded(), ["queue"], 0)
    assert finished and claimed == [], "a limit of 0 claims nothing"


def test_finish_and_claim_takes_the_next_job_of_the_finished_lock(store: JobStore, worker_id: int) -> None:
    head_id, next_id = store.defer_jobs([new_job(lock="alphabet"), new_job(lock="alphabet")])
    (head,) = store.claim_jobs(worker_id, None, limit=5)  # the second waits behind the head
    assert head.id == head_id
    finished, claimed = store.finish_and_claim(head.id, worker_id, 1, Outcome.succeeded(), None, 5)
    assert finished and [(job.id, job.attempts) for job in claimed] == [(next_id, 1)]


def test_finish_and_claim_claims_nothing_for_a_lost_attempt(store: JobStore, worker_id: int) -> None:
    store.defer_jobs([new_job(), new_job()])
    (claimed,) = store.claim_jobs(worker_id, None, limit=1)
    finished, more = store.finish_and_claim(claimed.id, worker_id, claimed.attempts + 1, Outcome.succeeded(), None, 5)
    assert (finished, more) == (False, [])
    assert [job.id for job in store.held_jobs(worker_id)] == [claimed.id]


# -- fencing ------------------------------------------------------------------------------------


def test_finish_by_a_stale_attempt_or_another_worker_changes_nothing(store: JobStore, worker_id: int) -> None:
    other_worker = store.register_worker("test-host", 4243, None)
    job_id = store.defer_job(new_job())
    claimed = claim_one(store, worker_id)
    assert claimed is not None
    assert not store.finish_job(job_id, worker_id, claimed.attempts + 1, Outcome.failed(BOOM))
    assert not store.finish_job(job_id, worker_id, claimed.attempts - 1, Outcome.failed(BOOM))
    assert not store.finish_job(job_id, other_worker, claimed.attempts, Outcome.failed(BOOM))
    assert store.get_job(job_id) == claimed


def test_reclaimed_attempt_cannot_finish(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=3))
    claimed = claim_one(store, worker_id)
    assert claimed is not None
    store.reclaim_jobs_of([worker_id], "partitioned")
    after_reclaim = store.get_job(job_id)
    assert not store.finish_job(job_id, worker_id, claimed.attempts, Outcome.succeeded())
    assert store.get_job(job_id) == after_reclaim

    new_worker = store.register_worker("test-host", 4243, None)
    second = claim_one(store, new_worker)
    assert second is not None and second.attempts == 2
    assert not store.finish_job(job_id, worker_id, 2, Outcome.succeeded()), "the old owner, with the new attempt"
    assert store.finish_job(job_id, new_worker, 2, Outcome.succeeded())


def test_a_reserved_job_cannot_be_finished(store: JobStore, worker_id: int) -> None:
    store.defer_jobs([new_job(), new_job()])
    _, reserved = store.claim_jobs(worker_id, None, limit=2)
    assert not store.finish_job(reserved.id, worker_id, 0, Outcome.succeeded())
    assert not store.finish_job(reserved.id, worker_id, 1, Outcome.succeeded())
    assert store.get_job(reserved.id).status is Status.DOING  # type: ignore[union-attr]


# -- workers, heartbeats and reclaim ------------------------------------------------------------


def test_list_workers_shows_heartbeat_ages_and_current_jobs(store: JobStore, time_passes: Callable[[float], None]) -> None:
    quiet = store.register_worker("host-a", 101, ["queue"])
    busy = store.register_worker("host-b", 102, None)
    time_passes(30)  # both heartbeats age; then only `busy` beats again
    assert store.record_heartbeat(busy)
    job_id = store.defer_job(new_job())
    assert claim_one(store, busy).id == job_id  # type: ignore[union-attr]

    workers = {info.worker_id: info for info in store.list_workers()}
    assert set(workers) == {quiet, busy}
    assert (workers[quiet].hostname, workers[quiet].pid) == ("host-a", 101)
    assert workers[quiet].heartbeat_age_s >= 30
    assert 0 <= workers[busy].heartbeat_age_s < 30
    assert workers[quiet].current_job_id is None and workers[quiet].current_job_run_s is None
    assert (workers[busy].current_job_id, workers[busy].current_task_name) == (job_id, "write_alphabet")
    run_s = workers[busy].current_job_run_s
    assert run_s is not None and run_s >= 0


def test_a_reserved_job_is_not_a_workers_current_job(store: JobStore, worker_id: int) -> None:
    store.defer_jobs([new_job(), new_job()])
    started, _ = store.claim_jobs(worker_id, None, limit=2)
    (info,) = store.list_workers()
    assert info.current_job_id == started.id


def test_unregister_worker_gives_back_its_reserved_jobs(store: JobStore, worker_id: int) -> None:
    store.defer_jobs([new_job(), new_job()])
    started, reserved = store.claim_jobs(worker_id, None, limit=2)
    assert store.finish_job(started.id, worker_id, 1, Outcome.succeeded())
    store.unregister_worker(worker_id)
    assert store.list_workers() == []
    assert not store.record_heartbeat(worker_id)
    released = store.get_job(reserved.id)
    assert released is not None and (released.status, released.attempts) == (Status.TODO, 0)


def test_reclaim_jobs_of_a_lost_worker(store: JobStore, worker_id: int) -> None:
    survivor = store.register_worker("test-host", 4243, None)
    may_retry = store.defer_job(new_job(task_name="retried", max_attempts=2, lock="L"))
    waiting_in_line = store.defer_job(new_job(lock="L"))
    out_of_attempts = store.defer_job(new_job(task_name="once", lock="M"))
    next_in_line = store.defer_job(new_job(lock="M"))
    reserved = store.defer_job(new_job(task_name="reserved"))
    survivors = store.defer_job(new_job(queue="other"))

    assert claim_one(store, worker_id).id == may_retry  # type: ignore[union-attr]
    assert [job.id for job in store.claim_jobs(worker_id, ["queue"], limit=2)] == [out_of_attempts, reserved]
    assert claim_one(store, survivor).id == survivors  # type: ignore[union-attr]

    reason = "child 3 killed by SIGKILL"
    reclaimed = {job.job_id: job for job in store.reclaim_jobs_of([worker_id], reason)}
    assert set(reclaimed) == {may_retry, out_of_attempts, reserved}
    assert all(job.worker_id == worker_id for job in reclaimed.values())

    retried = store.get_job(may_retry)
    assert retried is not None and (retried.status, retried.attempts, retried.worker_id) == (Status.TODO, 1, None)
    assert retried.last_error is not None
    assert (retried.last_error.type, retried.last_error.message) == ("WorkerLost", f"worker lost: {reason}")
    assert (reclaimed[may_retry].status, reclaimed[may_retry].was_started) == (Status.TODO, True)
    assert (reclaimed[may_retry].lock, reclaimed[may_retry].attempts) == ("L", 1)

    failed = store.get_job(out_of_attempts)
    assert failed is not None and failed.status is Status.FAILED and failed.finished_at is not None
    assert failed.last_error is not None
    assert (failed.last_error.type, failed.last_error.message) == ("WorkerLost", f"worker lost: {reason}")
    assert (reclaimed[out_of_attempts].status, reclaimed[out_of_attempts].task_name) == (Status.FAILED, "once")

    given_back = store.get_job(reserved)
    assert given_back is not None and (given_back.status, given_back.attempts) == (Status.TODO, 0)
    assert (reclaimed[reserved].status, reclaimed[reserved].was_started) == (Status.TODO, False)

    assert store.get_job(survivors).status is Status.DOING  # type: ignore[union-attr]
    assert [info.worker_id for info in store.list_workers()] == [survivor]
    assert not store.record_heartbeat(worker_id)
    assert store.reclaim_jobs_of([worker_id], "again") == []

    # The retried head keeps line L; the failed head freed line M for its next job.
    claimable = {job.id for job in store.claim_jobs(survivor, ["queue"], limit=10)}
    assert claimable == {may_retry, next_in_line, reserved}
    assert store.get_job(waiting_in_line).status is Status.TODO  # type: ignore[union-attr]


def test_a_reclaimed_attempt_is_due_again_at_once(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=2, scheduled_at=utcnow() - datetime.timedelta(days=1)))
    assert claim_one(store, worker_id) is not None
    store.reclaim_jobs_of([worker_id], "lost")
    reclaimed = store.get_job(job_id)
    assert reclaimed is not None
    assert_close(reclaimed.scheduled_at, utcnow(), within_s=5)
    assert claim_one(store, store.register_worker("test-host", 4243, None)).id == job_id  # type: ignore[union-attr]


def test_unregistering_a_worker_that_still_runs_a_job_reclaims_it(store: JobStore, worker_id: int) -> None:
    retried, failed = store.defer_jobs([new_job(max_attempts=2), new_job(queue="other")])
    assert claim_one(store, worker_id, ["queue"]).id == retried  # type: ignore[union-attr]
    assert claim_one(store, worker_id, ["other"]).id == failed  # type: ignore[union-attr]
    store.unregister_worker(worker_id)
    statuses = [store.get_job(job_id) for job_id in (retried, failed)]
    assert [(job.status, job.last_error.type) for job in statuses if job and job.last_error] == [
        (Status.TODO, "WorkerLost"),
        (Status.FAILED, "WorkerLost"),
    ]


def test_reclaim_stale_workers_takes_back_only_the_silent_ones(store: JobStore, time_passes: Callable[[float], None]) -> None:
    silent = store.register_worker("host-a", 101, None)
    store.defer_jobs([new_job(), new_job()])
    assert claim_one(store, silent) is not None
    time_passes(60)  # the silent worker's heartbeat ages past the timeout below
    alive = store.register_worker("host-b", 102, None)
    assert claim_one(store, alive) is not None

    assert store.record_heartbeat(alive)
    reclaimed = store.reclaim_stale_workers(heartbeat_timeout_s=30)
    assert [(job.worker_id, job.status) for job in reclaimed] == [(silent, Status.FAILED)]
    assert [info.worker_id for info in store.list_workers()] == [alive]
    assert store.record_heartbeat(alive)
    assert store.reclaim_stale_workers(heartbeat_timeout_s=30) == []
    assert store.reclaim_stale_workers(heartbeat_timeout_s=3600) == []


def test_reclaim_stale_workers_spares_the_workers_it_is_told_to(store: JobStore, time_passes: Callable[[float], None]) -> None:
    own, other = store.register_worker("host-a", 101, None), store.register_worker("host-b", 102, None)
    store.defer_jobs([new_job(), new_job()])
    assert claim_one(store, own) is not None and claim_one(store, other) is not None
    time_passes(60)  # an outage: every heartbeat looks old
    reclaimed = store.reclaim_stale_workers(heartbeat_timeout_s=30, excluding=[own])
    assert [job.worker_id for job in reclaimed] == [other]
    assert [info.worker_id for info in store.list_workers()] == [own]
    assert store.record_heartbeat(own)


def test_reclaim_stale_workers_takes_back_jobs_whose_worker_has_no_row(store: JobStore) -> None:
    never_registered = 987_654
    job_id = store.defer_job(new_job(max_attempts=2))
    assert claim_one(store, never_registered) is not None
    reclaimed = store.reclaim_stale_workers(heartbeat_timeout_s=3600)
    assert [(job.job_id, job.worker_id, job.status) for job in reclaimed] == [(job_id, never_registered, Status.TODO)]


# -- retention ----------------------------------------------------------------------------------


def finish_one(store: JobStore, worker_id: int, outcome: Outcome, **fields: object) -> int:
    job_id = store.defer_job(new_job(queue="finishing", **fields))
    job = claim_one(store, worker_id, ["finishing"])
    assert job is not None and job.id == job_id
    assert store.finish_job(job.id, worker_id, job.attempts, outcome)
    return job_id


def test_prune_deletes_jobs_finished_long_enough_ago_and_nothing_else(
    store: JobStore, worker_id: int, time_passes: Callable[[float], None]
) -> None:
    old = [finish_one(store, worker_id, Outcome.succeeded()), finish_one(store, worker_id, Outcome.failed(BOOM))]
    time_passes(8 * 86400)
    recent = finish_one(store, worker_id, Outcome.succeeded())
    waiting = store.defer_job(new_job())  # created eight days after the others, still todo
    running_id = store.defer_job(new_job(queue="running"))
    assert claim_one(store, worker_id, ["running"]) is not None
    time_passes(86400)

    assert store.prune_finished_jobs(7 * 86400, {Status.FAILED}, batch_size=10) == 1
    assert store.prune_finished_jobs(7 * 86400, FINISHED_STATUSES, batch_size=10) == 1
    assert store.prune_finished_jobs(7 * 86400, FINISHED_STATUSES, batch_size=10) == 0
    assert all(store.get_job(job_id) is None for job_id in old)
    assert all(store.get_job(job_id) is not None for job_id in (recent, waiting, running_id))


def test_prune_in_batches_takes_one_bounded_batch_at_a_time(
    store: JobStore, worker_id: int, time_passes: Callable[[float], None]
) -> None:
    finished = [finish_one(store, worker_id, Outcome.succeeded()) for _ in range(5)]
    time_passes(2 * 86400)
    assert [prune_in_batches(store, 86400, batch_size=2, max_batches=1) for _ in range(4)] == [2, 2, 1, 0]
    assert all(store.get_job(job_id) is None for job_id in finished)


def test_prune_in_batches_stops_between_batches_when_asked(
    store: JobStore, worker_id: int, time_passes: Callable[[float], None]
) -> None:
    finished = [finish_one(store, worker_id, Outcome.succeeded()) for _ in range(5)]
    time_passes(2 * 86400)
    answers = iter([False, False, True])
    assert prune_in_batches(store, 86400, batch_size=2, should_stop=lambda: next(answers)) == 4
    assert sum(store.get_job(job_id) is not None for job_id in finished) == 1


# -- waiting for jobs ---------------------------------------------------------------------------


def wait_in_thread(store: JobStore, queues: list[str], timeout_s: float) -> tuple[threading.Thread, list[bool]]:
    """A wait_for_jobs running in a thread, and the list its answer is appended to."""
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(store.wait_for_jobs(queues, timeout_s)))
    waiter.start()
    return waiter, answers


def waits_for_a_change(store: JobStore, change: Callable[[JobStore], object]) -> bool:
    """What a wait of an hour answers when another thread makes ``change`` through a sibling
    store 0.2 s into it: True can only come from the change."""
    sibling = store.open_sibling()
    changer = threading.Timer(0.2, lambda: change(sibling))
    changer.start()
    try:
        return store.wait_for_jobs(["queue"], timeout_s=3600.0)
    finally:
        changer.join()
        if sibling is not store:
            sibling.close()


def waits_for_a_deferral(store: JobStore, job: NewJob | None = None) -> bool:
    """The same for a deferral of a job (due now, unless ``job`` says otherwise)."""
    return waits_for_a_change(store, lambda sibling: sibling.defer_job(job or new_job()))


def test_wait_for_jobs_is_woken_by_a_deferral_from_another_thread(store: JobStore) -> None:
    store.wait_for_jobs(["queue"], timeout_s=0.01)  # starts listening, where the store needs to
    assert waits_for_a_deferral(store)


def test_the_deferral_of_a_job_due_later_wakes_a_wait_too(store: JobStore) -> None:
    # So that a worker waiting for a later job, or for its poll interval, waits less.
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    assert waits_for_a_deferral(store, new_job(schedule_in={"seconds": 600.0}))


def test_a_retry_recorded_by_a_busy_worker_wakes_a_wait(store: JobStore, worker_id: int) -> None:
    # The waiting worker learns of the retry now, and can wait until it is due, rather than at its
    # next poll.
    job_id = store.defer_job(new_job())
    assert claim_one(store, worker_id) is not None
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    assert waits_for_a_change(store, lambda sibling: sibling.finish_job(job_id, worker_id, 1, Outcome.retry(BOOM, 600)))
    assert store.get_job(job_id).status is Status.TODO  # type: ignore[union-attr]


def test_a_manual_retry_wakes_a_wait(store: JobStore, operator: Any, worker_id: int) -> None:
    job_id = store.defer_job(new_job())
    assert claim_one(store, worker_id) is not None
    assert store.finish_job(job_id, worker_id, 1, Outcome.failed(BOOM))
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    assert waits_for_a_change(store, lambda sibling: operator.retry_jobs([job_id]))
    assert store.get_job(job_id).status is Status.TODO  # type: ignore[union-attr]


def test_wait_for_jobs_returns_false_on_timeout(store: JobStore) -> None:
    assert not store.wait_for_jobs(["queue"], timeout_s=0.2)


def test_interrupt_wait_ends_a_wait_in_progress_as_a_timeout(store: JobStore) -> None:
    store.wait_for_jobs(["queue"], timeout_s=0.01)
    waiter, answers = wait_in_thread(store, ["queue"], timeout_s=3600.0)
    try:
        wait_for(lambda: waiter.is_alive(), 5, "the wait to begin")
        store.interrupt_wait()
        wait_for(lambda: not waiter.is_alive(), 30, "the interrupted wait to end, long before its hour")
    finally:
        store.interrupt_wait()
        waiter.join()
    assert answers == [False]


def test_an_interrupt_before_the_wait_ends_the_next_wait_only(store: JobStore) -> None:
    store.interrupt_wait()
    first, first_answers = wait_in_thread(store, ["queue"], timeout_s=3600.0)
    wait_for(lambda: not first.is_alive(), 30, "the first wait to end at once, on the earlier interrupt")
    assert first_answers == [False]
    # Had the interrupt been kept, the next wait would end at once with False, not with the job.
    assert waits_for_a_deferral(store)


# -- priorities ---------------------------------------------------------------------------------


def test_due_jobs_come_by_priority_then_scheduled_at_then_creation_order(store: JobStore, worker_id: int) -> None:
    an_hour_ago = utcnow() - datetime.timedelta(hours=1)
    low = store.defer_job(new_job(priority=-5, scheduled_at=an_hour_ago))
    default = store.defer_job(new_job())
    urgent = store.defer_job(new_job(priority=10))
    urgent_older = store.defer_job(new_job(priority=10, scheduled_at=an_hour_ago))
    default_older = store.defer_job(new_job(scheduled_at=an_hour_ago))
    highest = store.defer_job(new_job(priority=2**31 - 1))
    assert run_line(store, worker_id) == [highest, urgent_older, urgent, default_older, default, low]
    assert store.get_job(highest).priority == 2**31 - 1  # type: ignore[union-attr]


def test_a_higher_priority_job_not_due_yet_lets_due_ones_run(store: JobStore, worker_id: int) -> None:
    tomorrow = utcnow() + datetime.timedelta(days=1)
    store.defer_jobs([new_job(priority=10, scheduled_at=tomorrow) for _ in range(3)])
    due = store.defer_jobs([new_job(priority=-1), new_job(priority=5)])
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=10)] == [due[1], due[0]]


def test_a_lock_line_keeps_creation_order_whatever_the_priorities(store: JobStore, worker_id: int) -> None:
    head, behind = store.defer_jobs([new_job(lock="L", priority=-10), new_job(lock="L", priority=10)])
    free = store.defer_job(new_job(priority=5))
    # The job behind the head is never claimable, whatever its priority; the head only by its own.
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=10)] == [free, head]
    finished, started = store.finish_and_start(free, worker_id, 1, Outcome.succeeded(), head)
    assert finished and started is not None
    assert store.finish_job(head, worker_id, started.attempts, Outcome.succeeded())
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=10)] == [behind]


def test_a_retried_job_keeps_its_priority_and_its_place(store: JobStore, worker_id: int) -> None:
    retried, behind = store.defer_jobs([new_job(lock="L", priority=3, max_attempts=2), new_job(lock="L", priority=9)])
    assert claim_one(store, worker_id).id == retried  # type: ignore[union-attr]
    assert store.finish_job(retried, worker_id, 1, Outcome.retry(BOOM, retry_in_s=0))
    other = store.defer_job(new_job(priority=2))
    again = store.claim_jobs(worker_id, None, limit=10)
    assert [(job.id, job.priority, job.attempts) for job in again] == [(retried, 3, 2), (other, 2, 0)]
    assert store.get_job(behind).status is Status.TODO  # type: ignore[union-attr]


def test_a_batch_claim_goes_down_the_priority_levels_and_starts_the_highest(store: JobStore, worker_id: int) -> None:
    low, middle, high, also_middle = store.defer_jobs(
        [new_job(priority=1), new_job(priority=2), new_job(priority=3), new_job(priority=2)]
    )
    claimed = store.claim_jobs(worker_id, None, limit=3)
    assert [job.id for job in claimed] == [high, middle, also_middle]
    assert [job.is_started for job in claimed] == [True, False, False]
    assert store.held_jobs(worker_id) == claimed
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=3)] == [low]


def test_a_claim_by_queue_takes_the_highest_priority_of_those_queues(store: JobStore, worker_id: int) -> None:
    store.defer_job(new_job(queue="other", priority=100))
    mail, sms, also_mail = store.defer_jobs(
        [new_job(queue="mail", priority=1), new_job(queue="sms", priority=7), new_job(queue="mail", priority=7)]
    )
    assert [job.id for job in store.claim_jobs(worker_id, ["mail"], limit=5)] == [also_mail, mail]
    store.defer_job(new_job(queue="mail", priority=8))
    assert [job.priority for job in store.claim_jobs(worker_id, ["sms", "mail"], limit=5)] == [8, 7]


def test_finish_and_claim_takes_the_highest_priority_next(store: JobStore, worker_id: int) -> None:
    first = store.defer_job(new_job())
    (claimed,) = store.claim_jobs(worker_id, None)
    low, high = store.defer_jobs([new_job(priority=-1), new_job(priority=1)])
    finished, next_jobs = store.finish_and_claim(first, worker_id, 1, Outcome.succeeded(), None, 2)
    assert finished and [job.id for job in next_jobs] == [high, low]


# -- queueing locks -----------------------------------------------------------------------------


def test_a_defer_while_a_job_of_its_queueing_lock_waits_is_refused(store: JobStore) -> None:
    waiting = store.defer_job(new_job(queueing_lock="refresh-42", args=("first",)))
    with pytest.raises(AlreadyEnqueued) as refused:
        store.defer_job(new_job(queueing_lock="refresh-42", args=("second",)))
    assert (refused.value.queueing_lock, refused.value.job_id) == ("refresh-42", waiting)
    assert str(refused.value).startswith(f"queueing lock 'refresh-42' is held by job {waiting}, which is waiting")
    assert "nothing was deferred" in str(refused.value)
    assert isinstance(refused.value, CabbageError)
    assert store.count_jobs()[Status.TODO] == 1
    other_key = store.defer_job(new_job(queueing_lock="refresh-43"))
    assert store.get_job(other_key).queueing_lock == "refresh-43"  # type: ignore[union-attr]


def test_an_awaited_defer_keeps_priority_and_queueing_lock(store: JobStore) -> None:
    async def defer_twice() -> tuple[int, AlreadyEnqueued]:
        job_id = await store.defer_job_async(new_job(priority=7, queueing_lock="k"))
        try:
            await store.defer_calls_async(new_job(queueing_lock="k"), [((), {})])
        except AlreadyEnqueued as refused:
            return job_id, refused
        raise AssertionError("the second defer was not refused")

    job_id, refused = asyncio.run(defer_twice())
    assert refused.clashes == (QueueingLockClash(1, "k", waiting_job_id=job_id),)
    job = store.get_job(job_id)
    assert job is not None and (job.priority, job.queueing_lock) == (7, "k")
    assert store.count_jobs()[Status.TODO] == 1


def test_a_job_leaving_todo_frees_its_queueing_lock(store: JobStore, operator: Any, worker_id: int) -> None:
    claimed = store.defer_job(new_job(queueing_lock="k"))
    assert claim_one(store, worker_id).id == claimed  # type: ignore[union-attr]
    cancelled = store.defer_job(new_job(queueing_lock="k"))  # the first one is doing: free
    assert operator.cancel_jobs([cancelled]) == [cancelled]
    again = store.defer_job(new_job(queueing_lock="k"))
    assert {store.get_job(job_id).status for job_id in (claimed, cancelled, again)} == {  # type: ignore[union-attr]
        Status.DOING, Status.CANCELLED, Status.TODO
    }


def test_a_defer_of_many_is_refused_whole_naming_each_clash_with_a_waiting_job(store: JobStore) -> None:
    held_a, held_b = store.defer_jobs([new_job(queueing_lock="a"), new_job(queueing_lock="b")])
    with pytest.raises(AlreadyEnqueued) as refused:
        store.defer_jobs([new_job(), new_job(queueing_lock="b"), new_job(queueing_lock="c"), new_job(queueing_lock="a")])
    assert refused.value.clashes == (
        QueueingLockClash(2, "b", waiting_job_id=held_b),
        QueueingLockClash(4, "a", waiting_job_id=held_a),
    )
    assert str(refused.value) == (
        f"cannot defer: job 2 (queueing lock 'b') clashes with waiting job {held_b}; job 4 (queueing lock 'a') "
        f"clashes with waiting job {held_a}; nothing was deferred (one todo job per queueing lock)"
    )
    assert store.count_jobs()[Status.TODO] == 2


def test_jobs_of_one_defer_that_share_a_queueing_lock_are_refused(store: JobStore) -> None:
    with pytest.raises(AlreadyEnqueued) as refused:
        store.defer_jobs([new_job(queueing_lock="a"), new_job(queueing_lock="b"), new_job(queueing_lock="a")])
    assert refused.value.clashes == (QueueingLockClash(3, "a", earlier_position=1),)
    assert "job 3 repeats the queueing lock 'a' of job 1" in str(refused.value)
    template = new_job(queueing_lock="a")
    with pytest.raises(AlreadyEnqueued, match="job 2 repeats the queueing lock 'a' of job 1"):
        store.defer_calls(template, [(["x"], {}), (["y"], {})])
    assert store.count_jobs()[Status.TODO] == 0
    (job_id,) = store.defer_calls(template, [(["x"], {})])
    with pytest.raises(AlreadyEnqueued) as refused_call:
        store.defer_calls(template, [(["y"], {})])
    assert refused_call.value.clashes == (QueueingLockClash(1, "a", waiting_job_id=job_id),)


def test_a_queueing_lock_and_a_lock_combine(store: JobStore, worker_id: int) -> None:
    running = store.defer_job(new_job(lock="L", queueing_lock="Q"))
    assert claim_one(store, worker_id).id == running  # type: ignore[union-attr]
    waiting = store.defer_job(new_job(lock="L", queueing_lock="Q"))  # one runs, one waits behind it
    with pytest.raises(AlreadyEnqueued):
        store.defer_job(new_job(lock="L", queueing_lock="Q"))
    assert claim_one(store, worker_id) is None, "the waiting job queues behind the lock's running head"
    assert store.finish_job(running, worker_id, 1, Outcome.succeeded())
    assert claim_one(store, worker_id).id == waiting  # type: ignore[union-attr]


def test_a_retry_gives_way_to_a_waiting_job_of_its_queueing_lock(store: JobStore, worker_id: int) -> None:
    first = store.defer_job(new_job(lock="L", queueing_lock="Q", max_attempts=3))
    assert claim_one(store, worker_id).id == first  # type: ignore[union-attr]
    newer = store.defer_job(new_job(lock="L", queueing_lock="Q"))
    assert store.finish_job(first, worker_id, 1, Outcome.retry(BOOM, retry_in_s=0))
    superseded = store.get_job(first)
    assert superseded is not None and superseded.status is Status.CANCELLED and superseded.finished_at is not None
    assert superseded.last_error == JobError.superseded(newer)
    assert superseded.last_error.message == f"not run again: job {newer} with the same queueing lock is waiting"
    (attempt,) = store.list_attempts(first)
    assert (attempt.outcome, attempt.error) == (AttemptOutcome.FAILED, BOOM)
    assert claim_one(store, worker_id).id == newer, "the newer job took the line"  # type: ignore[union-attr]


def test_a_reclaimed_job_gives_way_to_a_waiting_job_of_its_queueing_lock(store: JobStore, worker_id: int) -> None:
    started, reserved = store.defer_jobs([new_job(queueing_lock="S", max_attempts=2), new_job(queueing_lock="R")])
    assert len(store.claim_jobs(worker_id, None, limit=2)) == 2
    newer_started, newer_reserved = store.defer_jobs([new_job(queueing_lock="S"), new_job(queueing_lock="R")])
    reclaimed = store.reclaim_jobs_of([worker_id], "killed")
    assert {(job.job_id, job.status) for job in reclaimed} == {(started, Status.CANCELLED), (reserved, Status.CANCELLED)}
    for job_id, newer in ((started, newer_started), (reserved, newer_reserved)):
        job = store.get_job(job_id)
        assert job is not None and (job.status, job.last_error) == (Status.CANCELLED, JobError.superseded(newer))
    assert [attempt.outcome for attempt in store.list_attempts(started)] == [AttemptOutcome.LOST]
    assert store.list_attempts(reserved) == [], "a reserved job made no attempt"


def test_of_jobs_going_back_together_with_one_queueing_lock_the_newest_goes_back(store: JobStore, worker_id: int) -> None:
    older = store.defer_job(new_job(queueing_lock="Q", max_attempts=2))
    assert claim_one(store, worker_id).id == older  # type: ignore[union-attr]
    newer = store.defer_job(new_job(queueing_lock="Q", max_attempts=2))
    free = store.defer_job(new_job())
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=5)] == [newer, free]
    store.reclaim_jobs_of([worker_id], "killed")
    assert [store.get_job(job_id).status for job_id in (older, newer, free)] == [  # type: ignore[union-attr]
        Status.CANCELLED, Status.TODO, Status.TODO
    ]
    assert store.get_job(older).last_error == JobError.superseded(newer)  # type: ignore[union-attr]


def test_a_reserved_job_given_back_gives_way_to_a_waiting_job_of_its_queueing_lock(
    store: JobStore, worker_id: int
) -> None:
    store.defer_jobs([new_job(), new_job(queueing_lock="Q")])
    _, reserved = store.claim_jobs(worker_id, None, limit=2)
    waiting = store.defer_job(new_job(queueing_lock="Q"))
    assert store.release_jobs([reserved.id], worker_id) == 1
    given_back = store.get_job(reserved.id)
    assert given_back is not None and (given_back.status, given_back.worker_id) == (Status.CANCELLED, None)
    assert given_back.last_error == JobError.superseded(waiting)
    assert store.held_jobs(worker_id)[0].id != reserved.id


def test_a_retry_by_hand_that_would_make_a_second_todo_job_of_a_queueing_lock_is_refused(
    store: JobStore, operator: Any, worker_id: int
) -> None:
    failed = [finish_one(store, worker_id, Outcome.failed(BOOM), queueing_lock=key) for key in ("A", "A", "B")]
    waiting = store.defer_job(new_job(queueing_lock="B"))
    with pytest.raises(JobStateError) as refused:
        operator.retry_jobs(failed)
    assert str(refused.value) == (
        f"cannot retry: jobs {failed[0]} and {failed[1]} share the queueing lock 'A'; job {failed[2]}'s queueing lock "
        f"'B' is held by waiting job {waiting} (one todo job per queueing lock); no job was changed"
    )
    assert {store.get_job(job_id).status for job_id in failed} == {Status.FAILED}  # type: ignore[union-attr]
    assert operator.retry_jobs([failed[1]]) == [failed[1]]


# -- attempts -----------------------------------------------------------------------------------


def test_every_attempt_is_kept_with_its_worker_times_outcome_and_error(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=3))
    assert store.list_attempts(job_id) == []
    for outcome in (Outcome.retry(BOOM, retry_in_s=0), Outcome.failed(JobError("ValueError", "bad", None))):
        job = claim_one(store, worker_id)
        assert job is not None and store.finish_job(job_id, worker_id, job.attempts, outcome)
    other_worker = store.register_worker("test-host", 4243, None)
    assert claim_one(store, other_worker) is None
    first, second = store.list_attempts(job_id)
    assert (first.job_id, first.attempt, first.worker_id, first.outcome, first.error) == (
        job_id, 1, worker_id, AttemptOutcome.RETRIED, BOOM
    )
    assert (second.attempt, second.outcome, second.error) == (2, AttemptOutcome.FAILED, JobError("ValueError", "bad"))
    assert first.started_at <= first.finished_at <= second.started_at <= second.finished_at
    assert second.finished_at == store.get_job(job_id).finished_at  # type: ignore[union-attr]

    succeeded = finish_one(store, worker_id, Outcome.succeeded())
    (attempt,) = store.list_attempts(succeeded)
    assert (attempt.outcome, attempt.error) == (AttemptOutcome.SUCCEEDED, None)


def test_a_reclaimed_attempt_is_kept_as_lost_with_why(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=2))
    assert claim_one(store, worker_id) is not None
    store.reclaim_jobs_of([worker_id], "child 3 killed by SIGKILL")
    (lost,) = store.list_attempts(job_id)
    assert (lost.attempt, lost.worker_id, lost.outcome) == (1, worker_id, AttemptOutcome.LOST)
    assert lost.error == JobError("WorkerLost", "worker lost: child 3 killed by SIGKILL")
    assert not store.finish_job(job_id, worker_id, 1, Outcome.succeeded())
    assert len(store.list_attempts(job_id)) == 1, "a fenced finish records nothing"


def test_only_the_last_attempts_of_a_job_are_kept(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=None))
    for _ in range(KEPT_ATTEMPTS + 3):
        job = claim_one(store, worker_id)
        assert job is not None and store.finish_job(job_id, worker_id, job.attempts, Outcome.retry(BOOM, retry_in_s=0))
    job = claim_one(store, worker_id)
    assert job is not None
    store.reclaim_jobs_of([worker_id], "lost")
    kept = store.list_attempts(job_id)
    assert [attempt.attempt for attempt in kept] == list(range(5, KEPT_ATTEMPTS + 5))
    assert kept[-1].outcome is AttemptOutcome.LOST


def test_pruning_a_job_deletes_its_attempts(store: JobStore, worker_id: int, time_passes: Callable[[float], None]) -> None:
    old = finish_one(store, worker_id, Outcome.succeeded())
    time_passes(2 * 86400)
    kept = finish_one(store, worker_id, Outcome.succeeded())
    assert store.prune_finished_jobs(86400, FINISHED_STATUSES, batch_size=10) == 1
    assert store.list_attempts(old) == []
    assert len(store.list_attempts(kept)) == 1


# -- counting and bad input ---------------------------------------------------------------------


def test_count_jobs_counts_every_status(store: JobStore, worker_id: int) -> None:
    assert store.count_jobs() == {status: 0 for status in Status}
    store.defer_jobs([new_job(), new_job(), new_job(), new_job(queue="other")])
    for outcome in (Outcome.succeeded(), Outcome.failed(BOOM)):
        job = claim_one(store, worker_id, ["queue"])
        assert job is not None and store.finish_job(job.id, worker_id, 1, outcome)
    assert claim_one(store, worker_id, ["queue"]) is not None

    expected = {status: 0 for status in Status}
    assert store.count_jobs() == {**expected, Status.TODO: 1, Status.DOING: 1, Status.SUCCEEDED: 1, Status.FAILED: 1}
    assert store.count_jobs("queue") == {**expected, Status.DOING: 1, Status.SUCCEEDED: 1, Status.FAILED: 1}
    assert store.count_jobs("nowhere") == expected


@pytest.mark.parametrize(
    "bad_job",
    [
        new_job(kwargs={"floor": "a\x00b"}),  # jsonb cannot store NUL
        new_job(kwargs={"floor": float("nan")}),
        new_job(scheduled_at=datetime.datetime(2038, 1, 19, 3, 14, 7)),
        new_job(schedule_in={"weeks": 1.0}),
        new_job(schedule_in={"months": 1.5}),
        new_job(priority=2**31),
        new_job(priority=True),
        new_job(priority=1.5),
        new_job(queueing_lock=""),
        new_job(queueing_lock="a\x00b"),
    ],
    ids=["nul", "nan", "naive", "unknown-unit", "half-month", "priority-too-high", "priority-bool", "priority-float",
         "empty-queueing-lock", "nul-in-queueing-lock"],
)
def test_a_job_the_store_cannot_keep_is_refused_with_its_batch(store: JobStore, bad_job: NewJob) -> None:
    with pytest.raises(CabbageError):
        store.defer_jobs([new_job(), bad_job])
    assert store.count_jobs() == {status: 0 for status in Status}


def nested(depth: int) -> Any:
    value: Any = "floor"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kwargs": {"floor": {1: "a", "1": "b"}}}, "argument 'floor' of write_alphabet is not JSON-serialisable (dict key 1, which JSON would turn into the str '1'); use str keys"),
        ({"args": ({True: 1},)}, "argument 1 of write_alphabet is not JSON-serialisable (dict key True, which JSON would turn into the str 'true')"),
        ({"args": ("ok", "\udcff")}, "argument 2 of write_alphabet is not JSON-serialisable (str with the surrogate '\\udcff', which UTF-8 cannot encode)"),
        ({"kwargs": {"floor": 10**4300}}, "argument 'floor' of write_alphabet is not JSON-serialisable (int of more than 4300 digits); pass str(value)"),
        ({"args": (nested(101),)}, "argument 1 of write_alphabet is not JSON-serialisable (lists and dicts nested more than 100 deep"),
        ({"queue": "mail\x00"}, "queue 'mail\\x00' contains a NUL character, which PostgreSQL cannot store; remove it"),
        ({"lock": "\ud800"}, "lock '\\ud800' contains the surrogate '\\ud800', which UTF-8 cannot encode; remove it"),
        ({"task_name": "tasks.\x00clean"}, "task name 'tasks.\\x00clean' contains a NUL character"),
    ],
    ids=["int-key", "bool-key", "surrogate", "long-int", "too-deep", "nul-queue", "surrogate-lock", "nul-task-name"],
)
def test_what_a_job_cannot_carry_is_refused_naming_it_on_every_defer_path(
    store: JobStore, arguments: dict[str, Any], message: str
) -> None:
    for defer in every_defer_path(store, new_job(**arguments)):
        with pytest.raises(CabbageError) as raised:
            defer()
        assert message in str(raised.value)
    assert store.count_jobs() == {status: 0 for status in Status}


def test_what_a_job_can_carry_at_the_limits_comes_back_unchanged(store: JobStore) -> None:
    largest = 10**4300 - 1  # 4300 digits: Python's default limit for reading an int from text
    arguments = (largest, -largest, nested(100), "é\U0001f600", {"": None})
    job = store.get_job(store.defer_job(new_job(args=arguments, kwargs={"floor": nested(99)})))
    assert job is not None
    assert job.args == (largest, -largest, nested(100), "é\U0001f600", {"": None}) and job.kwargs == {"floor": nested(99)}


@pytest.mark.parametrize(
    "schedule",
    [
        {"scheduled_at": datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))},
        {"scheduled_at": datetime.datetime(1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=14)))},
        {"schedule_in": {"years": 8000}},
        {"schedule_in": {"months": 8000 * 12, "seconds": 1.0}},
        {"schedule_in": {"seconds": 1e300}},
    ],
    ids=["after-9999-in-utc", "before-year-1-in-utc", "in-8000-years", "in-96000-months", "in-1e300-s"],
)
def test_a_schedule_outside_the_range_is_refused_on_every_defer_path(store: JobStore, schedule: dict[str, Any]) -> None:
    for defer in every_defer_path(store, new_job(**schedule)):
        with pytest.raises(ScheduleError, match="pick a time in that range$|pass a shorter delay$"):
            defer()
    assert store.count_jobs() == {status: 0 for status in Status}


def test_arguments_of_the_default_limit_are_kept_and_one_byte_more_is_refused(store: JobStore) -> None:
    assert store.max_arguments_bytes == 1_000_000
    # '["xx...x"]' and '{}': the text of both, 1,000,000 bytes in all.
    at_the_limit = new_job(args=("x" * (1_000_000 - len('[""]{}')),))
    over_it = new_job(kwargs={"floor": "é" * 166_664 + "xyz"})  # é is 6 bytes of JSON text (\\u00e9): 1,000,001 in all
    job_id = store.defer_job(at_the_limit)
    assert store.get_job(job_id).args == at_the_limit.args  # type: ignore[union-attr]
    for defer in every_defer_path(store, over_it):
        with pytest.raises(ArgumentsTooLargeError) as raised:
            defer()
        assert str(raised.value) == (
            "arguments of write_alphabet are 1,000,001 bytes of JSON, over the store's max_arguments_bytes of "
            "1,000,000; store large data elsewhere and pass its key, or raise max_arguments_bytes"
        )
        assert isinstance(raised.value, ValueError)
    assert store.count_jobs()[Status.TODO] == 1


def test_the_limit_is_a_store_option_and_holds_for_each_call_of_a_batch(store_with_limit: Callable[[int], JobStore]) -> None:
    limited = store_with_limit(100)
    calls = [((f"{letter * 90}",), {}) for letter in "abc"]  # 96 bytes each, 288 in all
    assert len(limited.defer_calls(new_job(), calls)) == 3
    assert len(limited.defer_jobs([new_job(args=args) for args, _ in calls])) == 3
    with pytest.raises(ArgumentsTooLargeError, match="are 101 bytes of JSON, over the store's max_arguments_bytes of 100"):
        limited.defer_calls(new_job(), [*calls, (("d" * 95,), {})])
    with pytest.raises(ArgumentsTooLargeError, match="are 101 bytes of JSON"):
        limited.defer_jobs([new_job(), new_job(kwargs={"floor": "d" * 87})])
    assert limited.count_jobs()[Status.TODO] == 6


def test_unknown_job_ids_are_answered_not_raised(store: JobStore, worker_id: int) -> None:
    missing = store.defer_job(new_job()) + 1000
    assert store.get_job(missing) is None
    assert not store.finish_job(missing, worker_id, 1, Outcome.succeeded())
    assert store.start_job(missing, worker_id) is None
    assert store.release_jobs([missing], worker_id) == 0
    assert store.finish_and_start(missing, worker_id, 1, Outcome.succeeded(), missing) == (False, None)


def test_unknown_workers_are_answered_not_raised(store: JobStore) -> None:
    assert not store.record_heartbeat(999_999)
    assert store.reclaim_jobs_of([999_999], "gone") == []
    store.unregister_worker(999_999)
    assert store.list_workers() == []


# -- periodic tasks ------------------------------------------------------------------------------

REPORT = PeriodicSchedule("report", "*/5 * * * *", "Europe/Paris", periodic_id="hourly", catch_up_s=600.0)


def store_now(store: JobStore) -> datetime.datetime:
    return store.list_periodic_schedules().now


def tick_of(tick_at: datetime.datetime, schedule: PeriodicSchedule = REPORT, **job_fields: object) -> PeriodicTick:
    job = new_job(schedule.task_name, kwargs={"timestamp": int(tick_at.timestamp())}, scheduled_at=tick_at, **job_fields)
    return PeriodicTick(schedule.task_name, schedule.periodic_id, tick_at, job)


def whole_seconds_ago(store: JobStore, seconds: float) -> datetime.datetime:
    return (store_now(store) - datetime.timedelta(seconds=seconds)).replace(microsecond=0)


def test_a_tick_is_recorded_once_with_its_job(store: JobStore) -> None:
    tick_at = whole_seconds_ago(store, 5)
    (recorded,) = store.record_periodic_ticks([tick_of(tick_at)])
    assert (recorded.task_name, recorded.periodic_id, recorded.tick_at) == ("report", "hourly", tick_at)
    assert recorded.job_id is not None and recorded.skipped_ticks is None
    assert store.record_periodic_ticks([tick_of(tick_at)]) == []  # the same tick again: nothing
    assert store.count_jobs()[Status.TODO] == 1


def test_a_ticks_job_is_an_ordinary_job_due_at_the_tick(store: JobStore, worker_id: int) -> None:
    tick_at = whole_seconds_ago(store, 5)
    (recorded,) = store.record_periodic_ticks([tick_of(tick_at, lock="reports", max_attempts=3)])
    assert recorded.job_id is not None
    job = store.get_job(recorded.job_id)
    assert job is not None
    assert (job.task_name, job.queue, job.lock, job.max_attempts) == ("report", "queue", "reports", 3)
    assert (job.args, job.kwargs, job.scheduled_at) == ((), {"timestamp": int(tick_at.timestamp())}, tick_at)
    claimed = claim_one(store, worker_id)
    assert claimed is not None and claimed.id == job.id


def test_a_ticks_job_keeps_its_priority_and_queueing_lock(store: JobStore, worker_id: int) -> None:
    tick_at = whole_seconds_ago(store, 5)
    store.defer_job(new_job("other"))
    (recorded,) = store.record_periodic_ticks([tick_of(tick_at, priority=9, queueing_lock="report")])
    assert recorded.job_id is not None and not isinstance(recorded, RefusedTick)
    job = store.get_job(recorded.job_id)
    assert job is not None and (job.priority, job.queueing_lock) == (9, "report")
    claimed = claim_one(store, worker_id)
    assert claimed is not None and claimed.id == job.id  # before the older job of priority 0


def test_a_tick_whose_job_its_queueing_lock_refuses_is_recorded_skipped_and_the_others_deferred(
    store: JobStore,
) -> None:
    waiting = store.defer_job(new_job("report", queueing_lock="report"))
    earlier, later = whole_seconds_ago(store, 20), whole_seconds_ago(store, 10)
    other = PeriodicSchedule("cleanup", "*/5 * * * *")
    recorded = store.record_periodic_ticks(
        [tick_of(earlier, queueing_lock="report"), tick_of(later, queueing_lock="report"), tick_of(later, other)]
    )
    assert [(tick.task_name, tick.job_id is None, tick.skipped_ticks) for tick in recorded] == [
        ("cleanup", False, None),
        ("report", True, 1),
        ("report", True, 1),
    ]
    assert not isinstance(recorded[0], RefusedTick)
    assert [(tick.queueing_lock, tick.waiting_job_id) for tick in recorded[1:] if isinstance(tick, RefusedTick)] == [
        ("report", waiting),
        ("report", waiting),
    ]
    assert store.count_jobs()[Status.TODO] == 2  # the waiting job and cleanup's
    store.declare_periodic_schedules([REPORT])
    last_tick = store.list_periodic_schedules().by_key()[("report", "hourly")].last_tick
    assert last_tick is not None
    assert (last_tick.tick_at, last_tick.job_id, last_tick.skipped_ticks) == (later, None, 1)
    assert type(last_tick) is RecordedTick  # the refusal is the call's answer, not kept
    assert store.record_periodic_ticks([tick_of(later, queueing_lock="report")]) == []


def test_ticks_of_one_call_sharing_a_queueing_lock_defer_the_first_only(store: JobStore) -> None:
    ticks = [whole_seconds_ago(store, seconds) for seconds in (30, 20, 10)]
    first, *rest = store.record_periodic_ticks([tick_of(tick_at, queueing_lock="report") for tick_at in ticks])
    assert first.tick_at == ticks[0] and first.job_id is not None
    assert [(tick.tick_at, tick.job_id, tick.skipped_ticks) for tick in rest] == [(ticks[1], None, 1), (ticks[2], None, 1)]
    assert [tick.waiting_job_id for tick in rest if isinstance(tick, RefusedTick)] == [first.job_id, first.job_id]
    assert store.count_jobs()[Status.TODO] == 1


def test_a_tick_not_yet_due_on_the_store_clock_is_not_recorded(store: JobStore) -> None:
    tick_at = whole_seconds_ago(store, -60)  # a minute ahead of the store's clock
    assert store.record_periodic_ticks([tick_of(tick_at)]) == []
    assert store.count_jobs()[Status.TODO] == 0


def test_a_tick_older_than_its_schedules_newest_is_never_recorded(store: JobStore) -> None:
    older, newer = whole_seconds_ago(store, 20), whole_seconds_ago(store, 10)
    assert len(store.record_periodic_ticks([tick_of(newer)])) == 1
    assert store.record_periodic_ticks([tick_of(older)]) == []
    # Another schedule of the same task is another line of ticks.
    other = PeriodicSchedule("report", "*/5 * * * *", periodic_id="daily")
    assert len(store.record_periodic_ticks([tick_of(older, other)])) == 1


def test_ticks_of_one_call_are_recorded_in_tick_order(store: JobStore) -> None:
    ticks = [whole_seconds_ago(store, seconds) for seconds in (10, 30, 20)]
    recorded = store.record_periodic_ticks([tick_of(tick_at) for tick_at in ticks])
    assert [tick.tick_at for tick in recorded] == sorted(ticks)
    assert sorted(recorded, key=lambda tick: tick.job_id or 0) == recorded  # jobs in tick order too


def test_skipped_ticks_are_recorded_without_a_job(store: JobStore) -> None:
    skipped_until, due = whole_seconds_ago(store, 900), whole_seconds_ago(store, 60)
    marker = PeriodicTick("report", "hourly", skipped_until, None, skipped_ticks=12)
    recorded = store.record_periodic_ticks([marker, tick_of(due)])
    assert [(tick.tick_at, tick.job_id is None, tick.skipped_ticks) for tick in recorded] == [
        (skipped_until, True, 12),
        (due, False, None),
    ]
    assert store.count_jobs()[Status.TODO] == 1


def test_declared_schedules_are_listed_with_their_last_and_next_ticks(
    store: JobStore, time_passes: Callable[[float], None]
) -> None:
    other = PeriodicSchedule("cleanup", "0 3 * * *")
    store.declare_periodic_schedules([REPORT, other])
    first = store.list_periodic_schedules()
    assert [(declared.task_name, declared.periodic_id) for declared in first.schedules] == [("cleanup", ""), ("report", "hourly")]
    cleanup, report = first.schedules
    assert report.schedule == REPORT and report.last_tick is None
    assert report.first_declared_at is not None and report.last_declared_at == report.first_declared_at
    assert report.next_tick_at == REPORT.next_tick_after(first.now)
    assert cleanup.next_tick_at == other.next_tick_after(first.now)

    older, newer = whole_seconds_ago(store, 20), whole_seconds_ago(store, 10)
    store.record_periodic_ticks([tick_of(older), tick_of(newer)])
    time_passes(30)
    changed = PeriodicSchedule("report", "* * * * *", "UTC", periodic_id="hourly", catch_up_s=60.0)
    store.declare_periodic_schedules([changed])
    overview = store.list_periodic_schedules()
    later = overview.by_key()[("report", "hourly")]
    assert later.schedule == changed
    assert later.last_declared_at is not None and later.first_declared_at is not None
    assert (later.last_declared_at - later.first_declared_at).total_seconds() >= 30  # the first one is kept
    assert later.last_tick is not None
    assert_close(overview.now - later.last_tick.tick_at, datetime.timedelta(seconds=40), within_s=2)


def test_no_declared_schedule_still_reads_the_store_clock(store: JobStore) -> None:
    overview = store.list_periodic_schedules()
    assert overview.schedules == []
    assert_close(overview.now, utcnow())


def test_pruning_ticks_keeps_each_schedules_newest(store: JobStore, time_passes: Callable[[float], None]) -> None:
    daily = PeriodicSchedule("report", "*/5 * * * *", periodic_id="daily")
    store.record_periodic_ticks([tick_of(whole_seconds_ago(store, seconds)) for seconds in (30, 20, 10)])
    store.record_periodic_ticks([tick_of(whole_seconds_ago(store, 30), daily)])
    time_passes(2 * 86400)
    assert store.prune_periodic_ticks(86400, batch_size=1) == 1
    assert store.prune_periodic_ticks(86400, batch_size=10) == 1  # the daily schedule's only tick stays
    assert store.prune_periodic_ticks(86400, batch_size=10) == 0
    store.declare_periodic_schedules([REPORT, daily])
    last_ticks = {key: declared.last_tick for key, declared in store.list_periodic_schedules().by_key().items()}
    assert all(tick is not None for tick in last_ticks.values())
    # The pruned ticks were older than the newest kept: they can never be recorded again.
    assert store.record_periodic_ticks([tick_of(whole_seconds_ago(store, 2 * 86400 + 30))]) == []


# -- aborting jobs (cabbage jobs abort) -----------------------------------------------------------


def test_aborting_a_waiting_or_reserved_job_cancels_it_at_once(store: JobStore, operator: Any, worker_id: int) -> None:
    running, reserved = store.defer_jobs([new_job(), new_job()])
    waiting = store.defer_job(new_job(scheduled_at=utcnow() + datetime.timedelta(hours=1)))
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=2)] == [running, reserved]

    result = operator.abort_jobs([waiting, reserved], "alice")

    assert (result.cancelled, result.requested) == ([reserved, waiting], [])
    for job_id in (waiting, reserved):
        job = store.get_job(job_id)
        assert job is not None and job.status is Status.CANCELLED and job.finished_at is not None
        assert job.aborted_by == "alice" and job.worker_id is None
    assert store.start_job(reserved, worker_id) is None, "the worker's start finds the reserved job gone"
    assert store.abort_requests_of(worker_id) == {}


def test_aborting_a_running_job_asks_its_worker_and_ends_it_cancelled(store: JobStore, operator: Any, worker_id: int) -> None:
    job_id = store.defer_job(new_job(max_attempts=5))
    assert claim_one(store, worker_id).id == job_id  # type: ignore[union-attr]
    other_worker = store.register_worker("test-host", 4343, None)

    result = operator.abort_jobs([job_id], "alice")
    assert (result.cancelled, result.requested) == ([], [job_id])
    assert store.get_job(job_id).status is Status.DOING  # type: ignore[union-attr]
    assert store.abort_requests_of(worker_id) == {job_id: "alice"}
    assert store.abort_requests_of(other_worker) == {}
    assert operator.abort_jobs([job_id], "bob").requested == [job_id], "asking again is no error"
    assert store.abort_requests_of(worker_id) == {job_id: "alice"}, "the first request is kept"

    # The task stopped with an error: not retried, although it had attempts left.
    assert store.finish_job(job_id, worker_id, 1, Outcome.retry(BOOM, 0))
    job = store.get_job(job_id)
    assert job is not None and job.status is Status.CANCELLED and job.finished_at is not None
    assert job.last_error is not None and (job.last_error.type, job.last_error.message) == ("Aborted", "aborted by alice")
    (attempt,) = store.list_attempts(job_id)
    assert attempt.outcome is AttemptOutcome.ABORTED
    assert attempt.error is not None and attempt.error.message == "aborted by alice"
    assert store.abort_requests_of(worker_id) == {}


def test_an_attempt_that_succeeds_despite_its_abort_stays_succeeded(store: JobStore, operator: Any, worker_id: int) -> None:
    job_id = store.defer_job(new_job())
    assert claim_one(store, worker_id) is not None
    operator.abort_jobs([job_id], "alice")
    assert store.finish_job(job_id, worker_id, 1, Outcome.succeeded())
    job = store.get_job(job_id)
    assert job is not None and job.status is Status.SUCCEEDED and job.last_error is None


def test_a_worker_that_knew_of_the_abort_reports_it_cancelled(store: JobStore, operator: Any, worker_id: int) -> None:
    job_id = store.defer_job(new_job())
    assert claim_one(store, worker_id) is not None
    operator.abort_jobs([job_id], "alice")
    assert store.finish_job(job_id, worker_id, 1, Outcome.aborted(JobError.aborted("alice")))
    job = store.get_job(job_id)
    assert job is not None and job.status is Status.CANCELLED
    assert [attempt.outcome for attempt in store.list_attempts(job_id)] == [AttemptOutcome.ABORTED]


def test_a_reclaimed_aborted_attempt_ends_cancelled_not_retried(store: JobStore, operator: Any, worker_id: int) -> None:
    aborted, lost = store.defer_jobs([new_job(max_attempts=3), new_job(max_attempts=3)])
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=2)] == [aborted, lost]
    assert store.start_job(lost, worker_id) is not None
    operator.abort_jobs([aborted], "alice")

    reclaimed = {job.job_id: job.status for job in store.reclaim_jobs_of([worker_id], "killed after the abort timeout")}

    assert reclaimed == {aborted: Status.CANCELLED, lost: Status.TODO}
    job = store.get_job(aborted)
    assert job is not None and job.last_error is not None and str(job.last_error) == "Aborted: aborted by alice"
    assert [attempt.outcome for attempt in store.list_attempts(aborted)] == [AttemptOutcome.ABORTED]
    assert [attempt.outcome for attempt in store.list_attempts(lost)] == [AttemptOutcome.LOST]


def test_an_abort_is_all_or_nothing(store: JobStore, operator: Any, worker_id: int) -> None:
    done, waiting = store.defer_jobs([new_job(), new_job(scheduled_at=utcnow() + datetime.timedelta(hours=1))])
    assert claim_one(store, worker_id).id == done  # type: ignore[union-attr]
    assert store.finish_job(done, worker_id, 1, Outcome.succeeded())
    with pytest.raises(JobStateError, match=f"job {done} is succeeded"):
        operator.abort_jobs([waiting, done], "alice")
    with pytest.raises(JobNotFound):
        operator.abort_jobs([waiting, done + 1000], "alice")
    assert store.get_job(waiting).status is Status.TODO  # type: ignore[union-attr]


@pytest.mark.parametrize("aborted_by", ["", "   ", "a\nb", "nul\x00", "x" * 201, "lone \udc80"])
def test_who_aborts_must_be_a_short_printable_name(store: JobStore, operator: Any, aborted_by: str) -> None:
    job_id = store.defer_job(new_job())
    with pytest.raises(CabbageError, match="who"):
        operator.abort_jobs([job_id], aborted_by)
    assert store.get_job(job_id).status is Status.TODO  # type: ignore[union-attr]


def test_a_retry_forgets_an_earlier_abort(store: JobStore, operator: Any, worker_id: int) -> None:
    job_id = store.defer_job(new_job())
    assert claim_one(store, worker_id) is not None
    operator.abort_jobs([job_id], "alice")
    assert store.finish_job(job_id, worker_id, 1, Outcome.failed(BOOM))
    assert operator.retry_jobs([job_id]) == [job_id]
    again = claim_one(store, worker_id)
    assert again is not None and (again.abort_requested_at, again.aborted_by) == (None, None)
    assert store.abort_requests_of(worker_id) == {}
    assert store.finish_job(job_id, worker_id, 2, Outcome.retry(BOOM, 0))
    assert store.get_job(job_id).status is Status.TODO, "retried, as a job nobody aborted"  # type: ignore[union-attr]


def test_an_abort_notifies_the_heartbeat_of_the_job_s_worker(store: JobStore, operator: Any, worker_id: int) -> None:
    import select

    job_id = store.defer_job(new_job())
    assert claim_one(store, worker_id) is not None
    other_worker = store.register_worker("test-host", 4343, None)
    heartbeat_stores = [store.open_sibling(), store.open_sibling()]
    mine = heartbeat_stores[0].watch_aborts(worker_id)
    theirs = heartbeat_stores[1].watch_aborts(other_worker)
    assert mine is not None and theirs is not None
    try:
        fd, their_fd = mine.fileno(), theirs.fileno()
        assert fd is not None and their_fd is not None
        assert not mine.take(), "nothing was asked yet"
        operator.abort_jobs([job_id], "alice")
        readable, _, _ = select.select([fd], [], [], 10)
        assert readable == [fd]
        assert mine.take()
        select.select([their_fd], [], [], 1)  # PostgreSQL notifies every listener; memory only the worker's
        assert not theirs.take(), "the notification names the job's worker"
    finally:
        mine.close()
        theirs.close()
        for heartbeat_store in heartbeat_stores:
            if heartbeat_store is not store:
                heartbeat_store.close()


# -- several attempts at once: claims that start all, finishes recorded together ----------------


def test_a_claim_may_start_every_job_it_takes(store: JobStore, worker_id: int) -> None:
    first, second, third = store.defer_jobs([new_job(), new_job(), new_job()])
    claimed = store.claim_jobs(worker_id, None, limit=2, start_all=True)
    assert [(job.id, job.attempts, job.is_started) for job in claimed] == [(first, 1, True), (second, 1, True)]
    assert store.start_job(second, worker_id) is None, "already started: nothing left to start"
    assert store.get_job(third).status is Status.TODO  # type: ignore[union-attr]


def test_finishes_recorded_together_are_fenced_each_and_claim_the_next_jobs_started(
    store: JobStore, worker_id: int
) -> None:
    first, second, retried = store.defer_jobs([new_job(), new_job(), new_job(max_attempts=2)])
    waiting = store.defer_jobs([new_job(), new_job(), new_job()])
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=3, start_all=True)] == [first, second, retried]
    stale = (second, 7, Outcome.succeeded())  # an attempt number that is not the job's: fenced out

    finished, claimed = store.finish_jobs_and_claim(
        worker_id, [(first, 1, Outcome.succeeded()), stale, (retried, 1, Outcome.retry(BOOM, 0))], None, limit=4
    )

    assert finished == {first, retried}
    assert store.get_job(first).status is Status.SUCCEEDED  # type: ignore[union-attr]
    assert store.get_job(second).status is Status.DOING, "the fenced-out finish changed nothing"  # type: ignore[union-attr]
    assert {job.id for job in claimed} == {retried, *waiting}, "claimed after the finishes: the retry, due now, too"
    assert all(job.is_started and job.worker_id == worker_id for job in claimed)
    assert [attempt.outcome for attempt in store.list_attempts(retried)] == [AttemptOutcome.RETRIED]


def test_finishes_recorded_together_claim_nothing_when_none_was_this_workers(store: JobStore, worker_id: int) -> None:
    job_id = store.defer_job(new_job())
    store.defer_job(new_job())
    assert claim_one(store, worker_id) is not None
    assert store.finish_jobs_and_claim(worker_id, [(job_id, 2, Outcome.succeeded())], None, limit=5) == (set(), [])
    assert store.finish_jobs_and_claim(worker_id, [], None, limit=5) == (set(), [])


def test_a_success_recorded_together_frees_its_lock_for_the_claim_in_the_same_call(store: JobStore, worker_id: int) -> None:
    first, second = store.defer_jobs([new_job(lock="L"), new_job(lock="L")])
    assert [job.id for job in store.claim_jobs(worker_id, None, limit=5, start_all=True)] == [first]
    finished, claimed = store.finish_jobs_and_claim(worker_id, [(first, 1, Outcome.succeeded())], None, limit=5)
    assert finished == {first} and [job.id for job in claimed] == [second]
    assert [attempt.outcome for attempt in store.list_attempts(first)] == [AttemptOutcome.SUCCEEDED]
