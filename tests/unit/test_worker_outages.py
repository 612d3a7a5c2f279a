"""The worker through a database outage, on the in-memory store: a lost connection changes no
outcome and runs no job twice, whatever the lost call had committed; the lease decides when the
worker may claim; an outage is logged once when it starts and once when it ends."""
from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

import cabbage
from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import Job, Status
from cabbage.lease import Lease
from cabbage.testing import InMemoryJobStore
from tests.waiting import wait_for

WAIT_S = 10.0  # how long the test waits for the worker: only reached when it never comes


class FlakyStore(InMemoryJobStore):
    """The in-memory store whose calls named in ``outage`` fail: ``before`` the change (nothing
    committed) or ``after`` it (committed, the answer lost), as many times as listed."""

    def __init__(self) -> None:
        super().__init__()
        self.outage: dict[str, list[str]] = {}

    def _through(self, name: str, call: Callable[[], Any]) -> Any:
        failures = self.outage.get(name)
        when = failures.pop(0) if failures else None
        if when == "before":
            raise DatabaseUnavailable(f"lost the connection during {name}")
        result = call()
        if when == "after":
            raise DatabaseUnavailable(f"lost the connection after {name} committed")
        return result

    def claim_jobs(self, worker_id: int, queues: Any, limit: int = 1, **options: Any) -> list[Job]:
        return self._through("claim_jobs", lambda: super(FlakyStore, self).claim_jobs(worker_id, queues, limit, **options))

    def start_job(self, job_id: int, worker_id: int) -> Job | None:
        return self._through("start_job", lambda: super(FlakyStore, self).start_job(job_id, worker_id))

    def finish_job(self, *args: Any) -> bool:
        return self._through("finish_job", lambda: super(FlakyStore, self).finish_job(*args))

    def finish_and_claim(self, *args: Any) -> Any:
        return self._through("finish_and_claim", lambda: super(FlakyStore, self).finish_and_claim(*args))

    def finish_jobs_and_claim(self, *args: Any) -> Any:
        return self._through("finish_jobs_and_claim", lambda: super(FlakyStore, self).finish_jobs_and_claim(*args))

    def finish_and_start(self, *args: Any) -> Any:
        return self._through("finish_and_start", lambda: super(FlakyStore, self).finish_and_start(*args))

    def held_jobs(self, worker_id: int) -> list[Job]:
        return self._through("held_jobs", lambda: super(FlakyStore, self).held_jobs(worker_id))

    def record_heartbeat(self, worker_id: int) -> bool:
        return self._through("record_heartbeat", lambda: super(FlakyStore, self).record_heartbeat(worker_id))


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=FlakyStore)


@pytest.fixture
def store(task_manager: cabbage.TaskManager) -> FlakyStore:
    assert isinstance(task_manager.store, FlakyStore)
    return task_manager.store


@pytest.fixture
def runs(task_manager: cabbage.TaskManager) -> list[str]:
    """Every run of the test task, in order."""
    return []


@pytest.fixture
def write(task_manager: cabbage.TaskManager, runs: list[str]) -> cabbage.Task:
    @task_manager.task(queue="queue", retry=3)
    def write(letter: str) -> None:
        runs.append(letter)

    return write


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == name]


def assert_each_ran_once(store: FlakyStore, runs: list[str], letters: str) -> None:
    assert runs == list(letters)
    assert [(job.status, job.attempts) for job in store.jobs] == [(Status.SUCCEEDED, 1)] * len(letters)
    assert [job for job in store.jobs if job.status is Status.DOING] == []


def worker_finishing_through(call: str, task_manager: cabbage.TaskManager, store: FlakyStore) -> cabbage.Worker:
    """A worker whose finishes go through ``call``: finish_and_claim when its lease allows a
    claim, finish_job when its lease is short (it heartbeats before each claim instead)."""
    if call == "finish_and_claim":
        return cabbage.Worker(task_manager)
    clock = StoppedClock()
    lease = Lease(timeout_s=30, margin_s=5, clock=clock)
    lease.renew(clock.now - 25)  # short, and the heartbeats below renew it with the stopped clock's now - 25
    lease.renew = lambda sent_at: None  # type: ignore[method-assign]  # it stays short
    return cabbage.Worker(task_manager, worker_id=store.register_worker("host", 1, None), lease=lease)


@pytest.mark.parametrize("call", ["finish_and_claim", "finish_job"])
def test_a_finish_that_fails_until_the_database_is_back_records_its_outcome_once(
    task_manager: cabbage.TaskManager, write: cabbage.Task, store: FlakyStore, runs: list[str], events: list[dict[str, Any]], call: str
) -> None:
    write.defer("a")
    store.outage[call] = ["before"]
    store.outage["finish_job"] = store.outage.get("finish_job", []) + ["before"] * 3  # the tries after the loss
    store.outage["held_jobs"] = ["before"]
    assert worker_finishing_through(call, task_manager, store).process_jobs() == 1
    assert store.outage[call] == store.outage["finish_job"] == []  # every failure was met
    assert_each_ran_once(store, runs, "a")
    assert not named(events, "job_fence_lost")
    assert len(named(events, "database_unreachable")) == 1
    assert len(named(events, "database_reconnected")) == 1


@pytest.mark.parametrize("call", ["finish_and_claim", "finish_job"])
def test_a_finish_whose_commit_was_hidden_by_the_loss_is_recognised(
    task_manager: cabbage.TaskManager, write: cabbage.Task, store: FlakyStore, runs: list[str], events: list[dict[str, Any]], call: str
) -> None:
    for letter in "ab":
        write.defer(letter)
    store.outage[call] = ["after"]
    assert worker_finishing_through(call, task_manager, store).process_jobs() == 2
    assert store.outage[call] == []
    assert_each_ran_once(store, runs, "ab")
    assert not named(events, "job_fence_lost")  # the refused second try found its own outcome


def test_a_claim_whose_commit_was_hidden_by_the_loss_is_run_not_forgotten(
    task_manager: cabbage.TaskManager, write: cabbage.Task, store: FlakyStore, runs: list[str]
) -> None:
    for letter in "abc":
        write.defer(letter)
    store.outage["claim_jobs"] = ["after", "before"]
    assert cabbage.Worker(task_manager, batch_size=2).process_jobs() == 3
    assert store.outage["claim_jobs"] == []
    assert_each_ran_once(store, runs, "abc")


def test_a_start_whose_commit_was_hidden_by_the_loss_is_run_not_skipped(
    task_manager: cabbage.TaskManager, write: cabbage.Task, store: FlakyStore, runs: list[str]
) -> None:
    for letter in "abcd":
        write.defer(letter)
    # The batch's second job is started by finish_and_start, the fourth by start_job after a claim.
    store.outage["finish_and_start"] = ["after"]
    store.outage["start_job"] = ["after"]
    assert cabbage.Worker(task_manager, batch_size=2).process_jobs() == 4
    assert store.outage["finish_and_start"] == []
    assert_each_ran_once(store, runs, "abcd")


def test_an_attempt_reclaimed_during_the_outage_drops_its_outcome(
    task_manager: cabbage.TaskManager, store: FlakyStore, events: list[dict[str, Any]]
) -> None:
    worker = cabbage.Worker(task_manager)

    @task_manager.task(retry=2)
    def cut_off() -> None:
        # While the task runs, the database goes away and another master reclaims the job.
        store.outage["finish_and_claim"] = ["before", "before"]
        assert worker.worker_id is not None
        store.reclaim_jobs_of([worker.worker_id], "no heartbeat for 30 s")

    job_id = cut_off.defer()
    worker.process_next_job()
    job = store.get_job(job_id)
    assert job is not None and job.status is Status.TODO and job.last_error is not None
    assert job.last_error.type == "WorkerLost"
    [lost] = named(events, "job_fence_lost")
    assert lost["outcome"] == "succeeded"


class StoppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_short_lease_is_renewed_by_a_heartbeat_before_a_claim(task_manager: cabbage.TaskManager, write: cabbage.Task, store: FlakyStore, runs: list[str]) -> None:
    clock = StoppedClock()
    worker_id = store.register_worker("host", 1, None)
    lease = Lease(timeout_s=30, margin_s=5, clock=clock)
    lease.renew(clock.now - 25)  # 5 s left: less than two margins
    write.defer("a")
    worker = cabbage.Worker(task_manager, worker_id=worker_id, lease=lease)
    assert worker.process_jobs() == 1
    assert runs == ["a"]
    assert lease.remaining_s() > 10  # renewed by the worker's own heartbeat


def test_a_worker_whose_row_is_gone_claims_nothing_and_stops(task_manager: cabbage.TaskManager, write: cabbage.Task, store: FlakyStore, runs: list[str]) -> None:
    clock = StoppedClock()
    worker_id = store.register_worker("host", 1, None)
    lease = Lease(timeout_s=30, margin_s=5, clock=clock)
    lease.renew(clock.now - 29)
    store.reclaim_jobs_of([worker_id], "no heartbeat for 30 s")  # another master took it back
    write.defer("a")
    worker = cabbage.Worker(task_manager, worker_id=worker_id, lease=lease)
    assert worker.process_jobs() == 0
    assert worker.is_stopping and runs == []
    assert store.jobs[0].status is Status.TODO


def test_the_lease_counts_from_the_send_of_the_last_accepted_heartbeat() -> None:
    clock = StoppedClock()
    renewals: list[float] = []
    lease = Lease(timeout_s=30, margin_s=5, clock=clock, on_renewed=renewals.append)
    assert lease.remaining_s() == 0 and not lease.allows_claim()
    lease.renew(990.0)
    assert lease.remaining_s() == 20 and lease.allows_claim()
    lease.renew(980.0)  # an older heartbeat answering late changes nothing
    assert lease.remaining_s() == 20 and renewals == [990.0]
    clock.now = 1011.0
    assert lease.remaining_s() == 9 and not lease.allows_claim()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_lost_round_trip_with_a_prefetch_held_runs_every_job_once(
    task_manager: cabbage.TaskManager, write: cabbage.Task, store: FlakyStore, runs: list[str], when: str
) -> None:
    # The round trip that records the ended attempts and refills the prefetch is lost, with what
    # it committed (the outcomes, new jobs claimed) or not: what the worker held and what the lost
    # call gave it are found in the rows, each job run once, each outcome recorded once.
    letters = "abcdefghijkl"
    for letter in letters:
        write.defer(letter)
    store.outage["finish_jobs_and_claim"] = [when, when]
    assert cabbage.Worker(task_manager, concurrency=2, prefetch=3).process_jobs() == len(letters)
    assert store.outage["finish_jobs_and_claim"] == []
    assert sorted(runs) == list(letters)
    assert [(job.status, job.attempts) for job in store.jobs] == [(Status.SUCCEEDED, 1)] * len(letters)


class HeldRoundTripStore(FlakyStore):
    """FlakyStore whose first finish_jobs_and_claim waits for ``release``, so that a test sees
    what the worker does while that round trip is on its way."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = threading.Event()
        self.release = threading.Event()

    def finish_jobs_and_claim(self, *args: Any) -> Any:
        if not self.sent.is_set():
            self.sent.set()
            assert self.release.wait(WAIT_S), "the test never released the round trip"
        return super().finish_jobs_and_claim(*args)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize(("concurrency", "ran_meanwhile"), [(2, 4), (1, 3)])
def test_attempts_that_end_while_a_lost_round_trip_is_on_its_way_run_once(when: str, concurrency: int, ran_meanwhile: int) -> None:
    # With a prefetch, the prefetched jobs run while the outcomes of the jobs before are on their
    # way; when that round trip is lost, the worker looks for what it holds in the rows, and the
    # jobs that ran meanwhile (their outcomes not sent yet) must not be taken for jobs to run.
    task_manager = cabbage.TaskManager(store_class=HeldRoundTripStore)
    store = task_manager.store
    assert isinstance(store, HeldRoundTripStore)
    runs: list[str] = []

    @task_manager.task(queue="queue", retry=3)
    def write(letter: str) -> None:
        runs.append(letter)

    letters = "abcdef"
    for letter in letters:
        write.defer(letter)
    worker = cabbage.Worker(task_manager, concurrency=concurrency, prefetch=2)
    thread = threading.Thread(target=worker.process_jobs)
    thread.start()
    try:
        assert store.sent.wait(WAIT_S)
        # The first to end have their outcomes on their way; the two prefetched run meanwhile.
        wait_for(lambda: len(runs) == ran_meanwhile, WAIT_S, "the prefetched jobs to run while the round trip is held")
        assert [job.status for job in store.jobs[:ran_meanwhile]] == [Status.DOING] * ran_meanwhile
        store.outage["finish_jobs_and_claim"] = [when]
    finally:
        store.release.set()
        thread.join(WAIT_S)
    assert not thread.is_alive()
    assert sorted(runs) == list(letters)
    assert [(job.status, job.attempts) for job in store.jobs] == [(Status.SUCCEEDED, 1)] * len(letters)


def test_a_stop_while_a_round_trip_is_on_its_way_gives_back_what_its_claim_brings() -> None:
    task_manager = cabbage.TaskManager(store_class=HeldRoundTripStore)
    store = task_manager.store
    assert isinstance(store, HeldRoundTripStore)
    runs: list[str] = []

    @task_manager.task(queue="queue")
    def write(letter: str) -> None:
        runs.append(letter)

    for letter in "abcdefgh":
        write.defer(letter)
    worker = cabbage.Worker(task_manager, concurrency=2, prefetch=2, poll_interval_s=600)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert store.sent.wait(WAIT_S)
        wait_for(lambda: len(runs) == 4, WAIT_S, "the prefetched jobs to run while the round trip is held")
        worker.stop()
    finally:
        store.release.set()
        thread.join(WAIT_S)
    assert not thread.is_alive()
    # The held round trip recorded a and b and claimed two more to refill the prefetch; the stop
    # gave those back unused once it came back, after c and d were recorded.
    assert sorted(runs) == list("abcd")
    assert [(job.status, job.attempts) for job in store.jobs[:4]] == [(Status.SUCCEEDED, 1)] * 4
    assert all((job.status, job.attempts, job.worker_id) == (Status.TODO, 0, None) for job in store.jobs[4:])
    assert store.list_workers() == []
