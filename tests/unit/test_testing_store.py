"""What only the in-memory store does: its test helpers, thread safety, and refusing what it cannot do.

The behaviour it shares with PostgreSQL is in tests/integration/test_store_contract.py.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from cabbage.exceptions import ConfigurationError, JobNotFound, JobStateError, UnserialisableArgumentError
from cabbage.jobs import Job, NewJob, Outcome, Status
from cabbage.store import load_store_from_path
from cabbage.testing import InMemoryJobStore


def new_job(**fields: object) -> NewJob:
    fields.setdefault("queue", "queue")
    return NewJob(task_name="write_alphabet", **fields)  # type: ignore[arg-type]


@pytest.fixture
def store() -> InMemoryJobStore:
    return InMemoryJobStore()


def test_the_howto_store_path_names_it() -> None:
    assert load_store_from_path("cabbage.testing.InMemoryJobStore") is InMemoryJobStore


def test_jobs_lists_every_job_newest_last(store: InMemoryJobStore) -> None:
    assert store.jobs == ()
    first, second = store.defer_jobs([new_job(args=("a",)), new_job(args=("b",))])
    third = store.defer_job(new_job(args=("c",)))
    worker_id = store.register_worker("host", 1, None)
    store.claim_jobs(worker_id, None)

    jobs: tuple[Job, ...] = store.jobs
    assert all(isinstance(job, Job) for job in jobs)
    assert [(job.id, job.args, job.status) for job in jobs] == [
        (first, ("a",), Status.DOING),
        (second, ("b",), Status.TODO),
        (third, ("c",), Status.TODO),
    ]


def test_jobs_is_a_snapshot_that_cannot_change_the_store(store: InMemoryJobStore) -> None:
    store.defer_job(new_job())
    jobs = store.jobs
    with pytest.raises(TypeError):
        jobs[0] = jobs[0]  # type: ignore[index]
    store.defer_job(new_job())
    assert len(jobs) == 1 and len(store.jobs) == 2


def test_reset_forgets_jobs_and_workers_and_restarts_ids(store: InMemoryJobStore) -> None:
    store.defer_jobs([new_job(lock="L"), new_job(lock="L")])
    worker_id = store.register_worker("host", 1, None)
    store.claim_jobs(worker_id, None)

    store.reset()

    assert store.jobs == () and store.list_workers() == []
    assert store.count_jobs() == {status: 0 for status in Status}
    assert store.defer_job(new_job(lock="L")) == 1, "a fresh line: the new job heads lock L"
    assert store.register_worker("host", 1, None) == 1
    assert [job.id for job in store.claim_jobs(1, None)] == [1]


def test_deferring_in_a_transaction_is_refused(store: InMemoryJobStore) -> None:
    with pytest.raises(ConfigurationError, match="the in-memory store cannot join a database transaction"):
        store.defer_job(new_job(), connection=object())
    assert store.jobs == ()


def test_arguments_are_copied_as_json_at_defer_time(store: InMemoryJobStore) -> None:
    floors = ["a"]
    job_id = store.defer_job(new_job(args=(floors,), kwargs={"options": {"x": 1}}))
    floors.append("b")
    job = store.get_job(job_id)
    assert job is not None and job.args == (["a"],)


@pytest.mark.parametrize("bad_value", [{1, 2}, float("nan"), object(), "a\x00b", {"key\x00": 1}])
def test_an_argument_json_cannot_carry_inserts_nothing(store: InMemoryJobStore, bad_value: object) -> None:
    with pytest.raises(UnserialisableArgumentError) as raised:
        store.defer_jobs([new_job(args=("fine",)), new_job(kwargs={"floor": bad_value})])
    assert isinstance(raised.value, TypeError)
    assert "write_alphabet" in str(raised.value)
    assert store.jobs == ()


def test_open_sibling_is_the_store_itself(store: InMemoryJobStore) -> None:
    assert store.open_sibling() is store


def test_concurrent_claims_take_each_job_once(store: InMemoryJobStore) -> None:
    """Four threads drain unlocked jobs and three lock lines; each job runs once, lines in order."""
    locks = [None, "L1", "L2", "L3"]
    ids = store.defer_jobs([new_job(lock=locks[n % 4], args=(n,)) for n in range(400)])
    runs: list[tuple[int, int]] = []  # (worker_id, job_id), in run order
    doing_per_lock: collections.Counter[str] = collections.Counter()
    overlaps: list[str] = []
    bookkeeping = threading.Lock()

    def drain(worker_id: int) -> None:
        while claimed := store.claim_jobs(worker_id, None, limit=2):
            store.release_jobs([job.id for job in claimed[1:]], worker_id)
            job = claimed[0]
            with bookkeeping:
                if job.lock is not None:
                    doing_per_lock[job.lock] += 1
                    if doing_per_lock[job.lock] > 1:
                        overlaps.append(job.lock)
                runs.append((worker_id, job.id))
            time.sleep(0)  # let the other threads in while this one "runs" the job
            with bookkeeping:
                if job.lock is not None:
                    doing_per_lock[job.lock] -= 1
            assert store.finish_job(job.id, worker_id, job.attempts, Outcome.succeeded())

    workers = [store.register_worker("host", pid, None) for pid in range(4)]
    threads = [threading.Thread(target=drain, args=(worker_id,)) for worker_id in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    ran = [job_id for _, job_id in runs]
    assert sorted(ran) == ids, "every job ran exactly once"
    assert overlaps == [], "two jobs of one lock ran at the same time"
    for lock in locks[1:]:
        line = [job.id for job in store.jobs if job.lock == lock]
        assert [job_id for job_id in ran if job_id in set(line)] == line, f"line {lock} ran out of order"
    assert store.count_jobs()[Status.SUCCEEDED] == 400


def test_concurrent_reclaims_take_each_job_once(store: InMemoryJobStore) -> None:
    worker_id = store.register_worker("host", 1, None)
    store.defer_jobs([new_job(max_attempts=2) for _ in range(20)])
    store.claim_jobs(worker_id, None, limit=20)
    results: list[int] = []

    def reclaim() -> None:
        reclaimed = store.reclaim_jobs_of([worker_id], "racing masters")
        results.extend(job.job_id for job in reclaimed)

    threads = [threading.Thread(target=reclaim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == list(range(1, 21))


def test_a_job_already_due_ends_the_wait_at_once(store: InMemoryJobStore) -> None:
    store.defer_job(new_job(queue="mail"))
    assert store.wait_for_jobs(["mail"], timeout_s=10)
    assert not store.wait_for_jobs(["sms"], timeout_s=0.05)


def test_a_deferral_wakes_only_the_waiters_of_its_queue(store: InMemoryJobStore) -> None:
    returned: list[bool] = []
    waiter = threading.Thread(target=lambda: returned.append(store.wait_for_jobs(["sms"], timeout_s=0.2)))
    waiter.start()
    store.defer_job(new_job(queue="mail"))
    waiter.join(timeout=10)
    assert returned == [False]


def test_retry_and_cancel_change_all_or_nothing(store: InMemoryJobStore) -> None:
    waiting, also_waiting = store.defer_jobs([new_job(), new_job()])
    with pytest.raises(ConfigurationError, match="no job id given to cancel"):
        store.cancel_jobs([])
    with pytest.raises(JobNotFound, match="cannot cancel: no job with id 99; no job was changed"):
        store.cancel_jobs([waiting, 99])
    with pytest.raises(JobStateError, match=f"cannot retry: job {waiting} is todo, job {also_waiting} is todo"):
        store.retry_jobs([waiting, also_waiting])
    assert [job.status for job in store.jobs] == [Status.TODO, Status.TODO]
    assert store.cancel_jobs([also_waiting, waiting, waiting]) == [waiting, also_waiting]
