"""The task API's priorities and queueing locks, on the in-memory store: options kept, bad ones
refused before any insert, and AlreadyEnqueued as a caller sees it. What the stores do with them
is the store contract's (tests/integration/test_store_contract.py)."""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest

import cabbage
from cabbage.exceptions import AlreadyEnqueued, CabbageError, ConfigurationError, QueueingLockClash
from cabbage.jobs import MAX_PRIORITY, MIN_PRIORITY
from cabbage.testing import InMemoryJobStore


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=InMemoryJobStore)


@pytest.fixture
def memory(task_manager: cabbage.TaskManager) -> InMemoryJobStore:
    return task_manager.store  # type: ignore[return-value]


@pytest.fixture
def refresh(task_manager: cabbage.TaskManager) -> cabbage.Task:
    return task_manager.task(queue="queue", name="refresh")(lambda user_id: None)


def test_priority_comes_from_the_task_unless_configured(task_manager: cabbage.TaskManager, memory: InMemoryJobStore) -> None:
    @task_manager.task(priority=5)
    def urgent() -> None: ...

    urgent.defer()
    urgent.configure(priority=-2).defer()
    urgent.configure(lock="L").defer()
    assert [job.priority for job in memory.jobs] == [5, -2, 5]
    assert urgent.priority == 5


def test_jobs_have_priority_0_and_no_queueing_lock_by_default(refresh: cabbage.Task, memory: InMemoryJobStore) -> None:
    refresh.defer(1)
    (job,) = memory.jobs
    assert (job.priority, job.queueing_lock) == (0, None)


def test_a_higher_priority_runs_first(task_manager: cabbage.TaskManager, memory: InMemoryJobStore) -> None:
    ran = []

    @task_manager.task
    def record(name: str) -> None:
        ran.append(name)

    record.defer("later")
    record.configure(priority=10).defer("first")
    record.configure(priority=MIN_PRIORITY).defer("last")
    assert cabbage.Worker(task_manager).process_jobs() == 3
    assert ran == ["first", "later", "last"]


@pytest.mark.parametrize("priority", [True, 1.0, "1", MAX_PRIORITY + 1, MIN_PRIORITY - 1, 2**63])
def test_a_bad_priority_is_refused(task_manager: cabbage.TaskManager, refresh: cabbage.Task, priority: Any) -> None:
    with pytest.raises(ConfigurationError, match="priority must be a whole number from -2147483648 to 2147483647"):
        refresh.configure(priority=priority)
    with pytest.raises(ConfigurationError, match="priority must be a whole number"):
        task_manager.task(name="bad", priority=priority)(lambda: None)
    assert "bad" not in task_manager.tasks


@pytest.mark.parametrize(
    ("queueing_lock", "message"),
    [
        ("", "queueing_lock must be a non-empty string"),
        (42, "queueing_lock must be a non-empty string naming what may wait only once, got 42 (int)"),
        (b"key", "queueing_lock must be a non-empty string"),
        ("a\x00b", "queueing lock 'a\\x00b' contains a NUL character, which PostgreSQL cannot store"),
        ("a\ud800", "contains the surrogate"),
    ],
)
def test_a_bad_queueing_lock_is_refused(
    task_manager: cabbage.TaskManager, refresh: cabbage.Task, queueing_lock: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        refresh.configure(queueing_lock=queueing_lock)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        task_manager.task(name="bad", queueing_lock=queueing_lock)(lambda: None)
    assert "bad" not in task_manager.tasks


def test_a_queueing_lock_comes_from_the_task_unless_configured(
    task_manager: cabbage.TaskManager, memory: InMemoryJobStore
) -> None:
    @task_manager.task(queueing_lock="rebuild-index")
    def rebuild_index() -> None: ...

    waiting = rebuild_index.defer()
    with pytest.raises(AlreadyEnqueued) as refused:
        rebuild_index.defer()
    assert refused.value.job_id == waiting
    with pytest.raises(AlreadyEnqueued):
        rebuild_index.configure(priority=3).defer()  # other options keep the task's queueing lock
    rebuild_index.configure(queueing_lock="rebuild-other-index").defer()
    assert [job.queueing_lock for job in memory.jobs] == ["rebuild-index", "rebuild-other-index"]
    assert rebuild_index.queueing_lock == "rebuild-index"


def test_a_defer_while_a_job_of_the_queueing_lock_waits_raises_already_enqueued(
    refresh: cabbage.Task, memory: InMemoryJobStore
) -> None:
    waiting = refresh.configure(queueing_lock="refresh-42").defer(42)
    with pytest.raises(cabbage.AlreadyEnqueued) as refused:
        refresh.configure(queueing_lock="refresh-42").defer(42)
    assert isinstance(refused.value, CabbageError)
    assert (refused.value.queueing_lock, refused.value.job_id) == ("refresh-42", waiting)
    assert str(refused.value) == (
        f"queueing lock 'refresh-42' is held by job {waiting}, which is waiting; nothing was deferred "
        f"(one todo job per queueing lock: defer again once job {waiting} has started or was cancelled)"
    )
    assert len(memory.jobs) == 1
    # Once the waiting job has started, its queueing lock is free again.
    worker_id = memory.register_worker("test-host", 1, None)
    assert [job.id for job in memory.claim_jobs(worker_id, None)] == [waiting]
    assert refresh.configure(queueing_lock="refresh-42").defer(42) == waiting + 1


def test_defer_many_with_a_queueing_lock_stores_one_call_at_most(refresh: cabbage.Task, memory: InMemoryJobStore) -> None:
    with pytest.raises(AlreadyEnqueued) as refused:
        refresh.configure(queueing_lock="k").defer_many([[1], [2], [3]])
    assert [(clash.position, clash.earlier_position) for clash in refused.value.clashes] == [(2, 1), (3, 1)]
    assert memory.jobs == ()
    (job_id,) = refresh.configure(queueing_lock="k").defer_many([[1]])
    with pytest.raises(AlreadyEnqueued) as refused_again:
        refresh.configure(queueing_lock="k").defer_many([[2]])
    assert refused_again.value.job_id == job_id


def test_already_enqueued_survives_pickling() -> None:
    refused = AlreadyEnqueued("queueing lock 'k' is held by job 3", [QueueingLockClash(1, "k", 3)])
    copy = pickle.loads(pickle.dumps(refused))
    assert (str(copy), copy.clashes, copy.job_id, copy.queueing_lock) == (str(refused), refused.clashes, 3, "k")
