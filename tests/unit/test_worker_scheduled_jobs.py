"""An idle worker and scheduled jobs, on the in-memory store: it waits for a notification no
longer than until the next job of its queues is due, a defer of a sooner job shortens that
wait, and a job said due that the claim cannot get is looked for again less and less often."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Sequence

import pytest

import cabbage
from cabbage.jobs import Job, Status
from cabbage.testing import InMemoryJobStore
from tests.waiting import wait_for

POLL_INTERVAL_S = 30.0


class WaitRecordingStore(InMemoryJobStore):
    """The in-memory store, keeping the timeout of each of the worker's waits for jobs."""

    def __init__(self) -> None:
        super().__init__()
        self.wait_timeouts_s: list[float] = []

    def wait_for_jobs(self, queues: Sequence[str] | None, timeout_s: float) -> bool:
        self.wait_timeouts_s.append(timeout_s)
        return super().wait_for_jobs(queues, timeout_s)


class HeldDueJobStore(WaitRecordingStore):
    """Says a job is due now, which no claim gets: as a due job whose row another session holds."""

    def seconds_until_next_due(self, queues: Sequence[str] | None) -> float | None:
        return 0.0


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=WaitRecordingStore)


def wait_timeouts_s(task_manager: cabbage.TaskManager) -> list[float]:
    """The timeouts of the worker's waits so far, in order."""
    assert isinstance(task_manager.store, WaitRecordingStore)
    return task_manager.store.wait_timeouts_s


@pytest.fixture
def ping(task_manager: cabbage.TaskManager) -> cabbage.Task:
    return task_manager.task(name="ping", queue="queue")(lambda: None)


def has_run(task_manager: cabbage.TaskManager, job_id: int) -> Job | None:
    """The job once it succeeded, else None."""
    job = task_manager.store.get_job(job_id)
    return job if job is not None and job.status is Status.SUCCEEDED else None


@contextlib.contextmanager
def running(worker: cabbage.Worker) -> Iterator[cabbage.Worker]:
    """The worker's run() in a thread, stopped on the way out."""
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


@pytest.fixture
def idle_worker(task_manager: cabbage.TaskManager) -> Iterator[cabbage.Worker]:
    """A worker running in a thread, whose poll interval is far longer than any test here."""
    with running(cabbage.Worker(task_manager, poll_interval_s=POLL_INTERVAL_S)) as worker:
        yield worker


def test_an_idle_worker_starts_a_scheduled_job_when_due_not_at_its_poll(
    ping: cabbage.Task, task_manager: cabbage.TaskManager, idle_worker: cabbage.Worker
) -> None:
    waits = wait_timeouts_s(task_manager)
    wait_for(lambda: POLL_INTERVAL_S in waits, 5, "the worker to wait out its poll interval")
    job_id = ping.configure(schedule_in={"seconds": 0.3}).defer()
    job = wait_for(lambda: has_run(task_manager, job_id), 10, f"the scheduled job to run, long before the {POLL_INTERVAL_S:g} s poll")
    assert job.started_at is not None and job.started_at >= job.scheduled_at, "never early"


def test_a_job_deferred_for_sooner_shortens_the_wait_for_a_later_one(ping: cabbage.Task, task_manager: cabbage.TaskManager) -> None:
    waits = wait_timeouts_s(task_manager)
    later = ping.configure(schedule_in={"seconds": 600.0}).defer()
    with running(cabbage.Worker(task_manager, poll_interval_s=POLL_INTERVAL_S)):
        # The later job is due after the poll: the worker waits the poll interval.
        wait_for(lambda: POLL_INTERVAL_S in waits, 5, "the worker to wait out its poll interval")
        sooner = ping.configure(schedule_in={"seconds": 0.3}).defer()
        wait_for(lambda: has_run(task_manager, sooner), 10, "the sooner job to run, long before the poll")
    assert not has_run(task_manager, later)
    assert [timeout_s for timeout_s in waits if 0 < timeout_s <= 0.3], waits


def test_a_due_job_the_claim_does_not_get_is_looked_for_again_less_and_less_often() -> None:
    task_manager = cabbage.TaskManager(store_class=HeldDueJobStore)
    waits = wait_timeouts_s(task_manager)
    with running(cabbage.Worker(task_manager, poll_interval_s=0.05)):
        wait_for(lambda: len(waits) >= 8, 10, "eight waits")
    # run() listens first (a wait of 0); then at once, in case the job became due between the
    # claim and the look, then 10 ms doubling, up to the poll interval.
    assert waits[:8] == [0.0, 0.0, 0.01, 0.02, 0.04, 0.05, 0.05, 0.05]


def test_a_worker_with_nothing_scheduled_waits_its_poll_interval(
    task_manager: cabbage.TaskManager, idle_worker: cabbage.Worker
) -> None:
    waits = wait_timeouts_s(task_manager)
    wait_for(lambda: len(waits) >= 2, 5, "the worker to wait")
    assert waits[:2] == [0.0, POLL_INTERVAL_S]
