"""A worker running several jobs at once, on the in-memory store: def tasks in threads, async def
tasks on one event loop, locks still one at a time and in order, timeouts, stopping."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Iterator

import pytest

import cabbage
from cabbage.jobs import Job, Status
from cabbage.testing import InMemoryJobStore
from tests.waiting import wait_for

WAIT_S = 10.0  # how long a task waits for its fellows: only reached when they never come


class Overlap:
    """How many tasks run at once, and the most that ever did."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._guard:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            yield
        finally:
            with self._guard:
                self.active -= 1


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=InMemoryJobStore)


def statuses(task_manager: cabbage.TaskManager) -> list[Status]:
    return [job.status for job in task_manager.store.jobs]  # type: ignore[attr-defined]


def test_def_tasks_run_together_up_to_the_concurrency(task_manager: cabbage.TaskManager) -> None:
    # Each job waits until all five run at once: one at a time, the barrier would break.
    together = threading.Barrier(5, timeout=WAIT_S)
    overlap = Overlap()

    @task_manager.task
    def meet(n: int) -> None:
        with overlap.running():
            together.wait()

    meet.defer_many([[n] for n in range(10)])
    assert cabbage.Worker(task_manager, concurrency=5).process_jobs() == 10
    assert statuses(task_manager) == [Status.SUCCEEDED] * 10
    assert overlap.most == 5  # never more than the concurrency


def test_async_tasks_run_together_on_one_event_loop(task_manager: cabbage.TaskManager) -> None:
    loops: set[int] = set()
    arrived: list[int] = []
    everyone: dict[str, asyncio.Event] = {}

    @task_manager.task
    async def gather(n: int) -> None:
        loops.add(id(asyncio.get_running_loop()))
        everyone.setdefault("here", asyncio.Event())
        arrived.append(n)
        if len(arrived) == 8:
            everyone["here"].set()
        await asyncio.wait_for(everyone["here"].wait(), WAIT_S)

    gather.defer_many([[n] for n in range(8)])
    assert cabbage.Worker(task_manager, concurrency=8).process_jobs() == 8
    assert statuses(task_manager) == [Status.SUCCEEDED] * 8
    assert len(loops) == 1


def test_a_worker_serves_def_and_async_tasks_alike(task_manager: cabbage.TaskManager) -> None:
    ran: list[str] = []

    @task_manager.task
    def plain(name: str) -> None:
        ran.append(name)

    @task_manager.task
    async def awaited(name: str) -> None:
        await asyncio.sleep(0)
        ran.append(name)

    plain.defer("a")
    awaited.defer("b")
    plain.defer("c")
    for concurrency in (1, 3):
        ran.clear()
        task_manager.store.reset()  # type: ignore[attr-defined]
        plain.defer("a")
        awaited.defer("b")
        assert cabbage.Worker(task_manager, concurrency=concurrency).process_jobs() == 2
        assert sorted(ran) == ["a", "b"]


def test_jobs_of_one_lock_never_overlap_and_keep_their_order(task_manager: cabbage.TaskManager) -> None:
    runs: dict[str, list[tuple[int, str]]] = {}
    guard = threading.Lock()
    running: set[str] = set()
    overlaps: list[str] = []

    @task_manager.task
    def write(lock: str, n: int) -> None:
        with guard:
            if lock in running:
                overlaps.append(lock)
            running.add(lock)
            runs.setdefault(lock, []).append((n, "begin"))
        threading.Event().wait(0.01)
        with guard:
            running.discard(lock)

    for n in range(10):
        for lock in ("L1", "L2", "L3", "L4"):
            write.configure(lock=lock).defer(lock, n)
    assert cabbage.Worker(task_manager, concurrency=20).process_jobs() == 40
    assert overlaps == []
    assert all([n for n, _ in line] == list(range(10)) for line in runs.values())


def test_an_async_task_past_its_timeout_is_cancelled_and_its_job_fails(task_manager: cabbage.TaskManager) -> None:
    cancelled: list[bool] = []

    @task_manager.task(timeout=0.2)
    async def slow() -> None:
        try:
            await asyncio.sleep(WAIT_S)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    job_id = slow.defer()
    assert cabbage.Worker(task_manager, concurrency=2).process_jobs() == 1
    job = task_manager.store.get_job(job_id)
    assert job is not None and job.status is Status.FAILED and job.last_error is not None
    assert job.last_error.type == "cabbage.attempts.TaskTimedOut"
    assert job.last_error.message == f"job {job_id} ({slow.name}) timed out after 0.2 s and was cancelled"
    assert cancelled == [True]


def test_a_thread_past_its_timeout_stops_the_worker_once_the_others_are_recorded(task_manager: cabbage.TaskManager) -> None:
    release = threading.Event()

    @task_manager.task(timeout=0.2)
    def stuck() -> None:
        release.wait(WAIT_S)

    @task_manager.task
    def quick(n: int) -> None:
        pass

    stuck_id = stuck.defer()
    quick.defer_many([[n] for n in range(3)])
    overruns: list[list[int]] = []
    worker = cabbage.Worker(task_manager, concurrency=2)
    worker.on_overrun = lambda jobs: (overruns.append([job.id for job in jobs]), release.set())

    thread = threading.Thread(target=worker.process_jobs)
    thread.start()
    wait_for(lambda: overruns, WAIT_S, "the overrun to be reported")
    thread.join(WAIT_S)
    assert overruns == [[stuck_id]]
    assert worker.is_stopping
    assert [job.status for job in task_manager.store.jobs if job.task_name == quick.name] == [Status.SUCCEEDED] * 3  # type: ignore[attr-defined]


def test_stop_lets_every_job_in_flight_finish(task_manager: cabbage.TaskManager) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    @task_manager.task
    def hold(n: int) -> None:
        started.release()
        release.wait(WAIT_S)

    hold.defer_many([[n] for n in range(5)])
    worker = cabbage.Worker(task_manager, concurrency=3, poll_interval_s=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    for _ in range(3):
        assert started.acquire(timeout=WAIT_S)
    worker.stop()
    release.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert sorted(statuses(task_manager), key=str) == sorted([Status.SUCCEEDED] * 3 + [Status.TODO] * 2, key=str)
    assert task_manager.store.list_workers() == []


def test_an_attempt_that_ends_while_the_worker_waits_for_jobs_is_recorded_at_once(task_manager: cabbage.TaskManager) -> None:
    # A slot is free, so the loop waits for a notification, here for ten minutes: only the
    # attempt's end can wake it in time.
    release = threading.Event()
    started = threading.Event()

    @task_manager.task
    def hold() -> None:
        started.set()
        release.wait(WAIT_S)

    hold.defer()
    worker = cabbage.Worker(task_manager, concurrency=2, poll_interval_s=600)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert started.wait(WAIT_S)
        release.set()
        wait_for(lambda: statuses(task_manager) == [Status.SUCCEEDED], WAIT_S, "the ended attempt to be recorded")
    finally:
        worker.stop()
        thread.join(WAIT_S)
    assert not thread.is_alive()


def test_hooks_see_each_job_in_the_worker_loops_thread(task_manager: cabbage.TaskManager) -> None:
    seen: list[tuple[str, int, str]] = []

    @task_manager.task
    def work(n: int) -> None:
        pass

    work.defer_many([[n] for n in range(4)])
    worker = cabbage.Worker(task_manager, concurrency=2)
    here = threading.current_thread().name
    worker.on_job_started = lambda job: seen.append(("started", job.id, threading.current_thread().name))
    worker.on_job_finished = lambda job: seen.append(("finished", job.id, threading.current_thread().name))
    assert worker.process_jobs() == 4
    assert {thread for _, _, thread in seen} == {here}
    assert sorted(job_id for event, job_id, _ in seen if event == "finished") == [job.id for job in task_manager.store.jobs]  # type: ignore[attr-defined]


def test_each_batch_of_starts_and_returns_ends_before_the_worker_records_or_claims(task_manager: cabbage.TaskManager) -> None:
    # The supervisor's child sends what the hooks gathered at each batch end: a start or a
    # return left unsent while the worker waits on the database would hide a running job.
    events: list[tuple[str, int]] = []

    @task_manager.task
    async def work(n: int) -> None:
        await asyncio.sleep(0.001 * (n % 3))

    work.defer_many([[n] for n in range(120)])
    worker = cabbage.Worker(task_manager, concurrency=50)
    worker.on_job_started = lambda job: events.append(("started", job.id))
    worker.on_task_returned = lambda job: events.append(("returned", job.id))
    worker.on_job_finished = lambda job: events.append(("finished", job.id))
    worker.on_batch_end = lambda: events.append(("batch", 0))
    assert worker.process_jobs() == 120
    assert statuses(task_manager) == [Status.SUCCEEDED] * 120
    unsent = False
    for event, _ in events:
        if event in ("started", "returned"):
            unsent = True
        elif event == "batch":
            unsent = False
        else:
            assert not unsent, "an outcome was recorded before the batch of its return ended"
    assert not unsent
    assert sum(event == "batch" for event, _ in events) < sum(event == "started" for event, _ in events), "batches, not jobs"


@pytest.mark.parametrize("concurrency", [0, -1, 10_001, True, 2.0])
def test_a_bad_concurrency_is_refused(task_manager: cabbage.TaskManager, concurrency: Any) -> None:
    with pytest.raises(ValueError, match="concurrency must be a whole number from 1 to 10000"):
        cabbage.Worker(task_manager, concurrency=concurrency)


def test_the_jobs_of_a_batch_are_given_back_when_a_job_ran_by_hand_stops(task_manager: cabbage.TaskManager) -> None:
    # process_next_job runs exactly one job, whatever the concurrency.
    @task_manager.task
    def work(n: int) -> None:
        pass

    work.defer_many([[n] for n in range(3)])
    worker = cabbage.Worker(task_manager, concurrency=3)
    assert worker.process_next_job()
    assert sorted(statuses(task_manager), key=str) == sorted([Status.SUCCEEDED] + [Status.TODO] * 2, key=str)
    jobs: tuple[Job, ...] = task_manager.store.jobs  # type: ignore[attr-defined]
    assert all(job.attempts == 0 for job in jobs if job.status is Status.TODO)


# -- prefetch ----------------------------------------------------------------------------------


def doing_jobs(task_manager: cabbage.TaskManager) -> list[Job]:
    return [job for job in task_manager.store.jobs if job.status is Status.DOING]  # type: ignore[attr-defined]


def test_a_prefetch_holds_started_jobs_beyond_the_running_ones(task_manager: cabbage.TaskManager) -> None:
    release = threading.Event()
    overlap = Overlap()

    @task_manager.task
    def hold(n: int) -> None:
        with overlap.running():
            release.wait(WAIT_S)

    hold.defer_many([[n] for n in range(10)])
    worker = cabbage.Worker(task_manager, concurrency=2, prefetch=3, poll_interval_s=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        # Two run; three more are started (an attempt each, held by this worker) and wait for a slot.
        wait_for(lambda: len(doing_jobs(task_manager)) == 5, WAIT_S, "two running and three prefetched jobs")
        assert worker.running_count == 2
        assert all(job.attempts == 1 and job.worker_id is not None for job in doing_jobs(task_manager))
        assert statuses(task_manager).count(Status.TODO) == 5
        # Both tasks inside before they are let go: a thread slow to start would otherwise meet none.
        wait_for(lambda: overlap.active == 2, WAIT_S, "both running tasks to be inside their task")
        release.set()
        wait_for(lambda: statuses(task_manager) == [Status.SUCCEEDED] * 10, WAIT_S, "every job to succeed")
    finally:
        release.set()
        worker.stop()
        thread.join(WAIT_S)
    assert overlap.most == 2  # the prefetch never runs beyond the concurrency


def test_a_freed_slot_takes_a_prefetched_job_before_the_outcome_is_recorded(task_manager: cabbage.TaskManager) -> None:
    # The point of a prefetch: the next job runs while the round trip that records the last
    # outcome (and claims the next jobs) is on its way.
    events: list[tuple[str, int]] = []

    @task_manager.task
    def work(n: int) -> None:
        pass

    work.defer_many([[n] for n in range(6)])
    worker = cabbage.Worker(task_manager, concurrency=2, prefetch=2)
    worker.on_job_started = lambda job: events.append(("started", job.id))
    worker.on_task_returned = lambda job: events.append(("returned", job.id))
    worker.on_job_finished = lambda job: events.append(("finished", job.id))
    assert worker.process_jobs() == 6
    assert statuses(task_manager) == [Status.SUCCEEDED] * 6
    began_before_a_recording = [
        job_id for position, (event, job_id) in enumerate(events)
        if event == "started" and any(later == "finished" for later, _ in events[position:])
        and any(earlier == "returned" and (("finished", other) not in events[:position]) for earlier, other in events[:position])
    ]  # fmt: skip
    assert began_before_a_recording, f"no job began between an attempt's return and its recording: {events}"


def test_stop_gives_the_prefetched_jobs_back_unused_and_waits_for_the_running_ones(task_manager: cabbage.TaskManager) -> None:
    release = threading.Event()
    ran: list[int] = []

    @task_manager.task
    def hold(n: int) -> None:
        release.wait(WAIT_S)
        ran.append(n)

    hold.defer_many([[n] for n in range(8)])
    # All slots taken, with a poll interval of ten minutes: only the stop itself can wake the loop.
    worker = cabbage.Worker(task_manager, concurrency=2, prefetch=2, poll_interval_s=600)
    thread = threading.Thread(target=worker.run)
    thread.start()
    wait_for(lambda: len(doing_jobs(task_manager)) == 4, WAIT_S, "two running and two prefetched jobs")
    worker.stop()
    wait_for(lambda: len(doing_jobs(task_manager)) == 2, WAIT_S, "the prefetch to be given back while two run")
    release.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    jobs: tuple[Job, ...] = task_manager.store.jobs  # type: ignore[attr-defined]
    assert len(ran) == 2 and [job.status for job in jobs].count(Status.SUCCEEDED) == 2
    assert all(job.attempts == 0 and job.worker_id is None and job.started_at is None
               for job in jobs if job.status is Status.TODO)  # fmt: skip
    assert [job.status for job in jobs].count(Status.TODO) == 6
    assert task_manager.store.list_workers() == []


def test_a_prefetch_stays_within_max_jobs(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task
    def work(n: int) -> None:
        pass

    work.defer_many([[n] for n in range(30)])
    cabbage.Worker(task_manager, concurrency=3, prefetch=10).run(max_jobs=5)
    jobs: tuple[Job, ...] = task_manager.store.jobs  # type: ignore[attr-defined]
    assert [job.status for job in jobs].count(Status.SUCCEEDED) == 5
    assert all(job.attempts == 0 for job in jobs if job.status is Status.TODO)
    assert len(jobs) == 30


def test_with_a_prefetch_jobs_of_one_lock_never_overlap_and_keep_their_order(task_manager: cabbage.TaskManager) -> None:
    runs: dict[str, list[int]] = {}
    running: set[str] = set()
    overlaps: list[str] = []
    guard = threading.Lock()

    @task_manager.task
    async def write(lock: str | None, n: int) -> None:
        if lock is None:  # no lock: fills the slots and the prefetch
            await asyncio.sleep(0.002)
            return
        with guard:
            overlaps.extend([lock] if lock in running else [])
            running.add(lock)
            runs.setdefault(lock, []).append(n)
        await asyncio.sleep(0.002)
        with guard:
            running.discard(lock)

    for n in range(10):
        for lock in ("L1", "L2", "L3"):
            write.configure(lock=lock).defer(lock, n)
        write.defer_many([[None, n], [None, n], [None, n]])
    assert cabbage.Worker(task_manager, concurrency=5, prefetch=20).process_jobs() == 60
    assert overlaps == []
    assert sorted(runs) == ["L1", "L2", "L3"]
    assert all(line == list(range(10)) for line in runs.values())


@pytest.mark.parametrize("prefetch", [-1, 10_001, True, 2.0, "5"])
def test_a_bad_prefetch_is_refused(task_manager: cabbage.TaskManager, prefetch: Any) -> None:
    with pytest.raises(ValueError, match="prefetch must be a whole number from 0 to 10000"):
        cabbage.Worker(task_manager, concurrency=4, prefetch=prefetch)


def test_a_prefetch_with_a_batch_at_concurrency_one_is_refused(task_manager: cabbage.TaskManager) -> None:
    with pytest.raises(ValueError, match="prefetch and batch_size are two ways to hold jobs ahead"):
        cabbage.Worker(task_manager, prefetch=3, batch_size=5)


def test_a_prefetch_at_concurrency_one_runs_one_job_at_a_time_on_a_thread_of_its_own(task_manager: cabbage.TaskManager) -> None:
    overlap, threads = Overlap(), set()

    @task_manager.task
    def work(n: int) -> None:
        with overlap.running():
            threads.add(threading.get_ident())

    work.defer_many([[n] for n in range(20)])
    worker = cabbage.Worker(task_manager, prefetch=5)
    assert not worker.runs_inline
    assert worker.process_jobs() == 20
    assert statuses(task_manager) == [Status.SUCCEEDED] * 20
    assert overlap.most == 1
    assert threading.get_ident() not in threads  # the loop's thread records while a job runs
    assert cabbage.Worker(task_manager).runs_inline and not cabbage.Worker(task_manager, concurrency=2).runs_inline


def test_the_hooks_hear_of_a_prefetch_before_a_wait_and_of_each_start_before_its_task_runs(task_manager: cabbage.TaskManager) -> None:
    # What a supervisor's master needs to give a dead child's never-begun jobs back unused: each
    # prefetched job told of, and each start told (the batch ended) before the task may run.
    events: list[tuple[str, int]] = []
    guard = threading.Lock()

    def note(event: str, job_id: int) -> None:
        with guard:
            events.append((event, job_id))

    @task_manager.task
    async def work(n: int) -> None:
        note("ran", cabbage.current_job().job.id)
        await asyncio.sleep(0.002)

    work.defer_many([[n] for n in range(30)])
    worker = cabbage.Worker(task_manager, concurrency=3, prefetch=4)
    told: set[int] = set()
    worker.on_jobs_prefetched = lambda jobs: [told.add(job.id) or note("prefetched", job.id) for job in jobs]
    worker.on_job_started = lambda job: note("started", job.id)
    worker.on_batch_end = lambda: note("batch", 0)
    assert worker.process_jobs() == 30
    assert told, "the worker held a prefetch"
    for job_id in range(1, 31):
        started = events.index(("started", job_id))
        ran = events.index(("ran", job_id))
        assert ("batch", 0) in events[started:ran], f"job {job_id} ran before the batch that began it ended"
        if job_id in told:
            assert events.index(("prefetched", job_id)) < started
