"""The worker against PostgreSQL: woken by NOTIFY, or when a scheduled job is due, rather than
by the poll interval, and worker processes racing over locked jobs without ever breaking a
lock's rules."""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

import cabbage
from cabbage.jobs import Status
from cabbage.postgres import PostgresJobStore
from tests.waiting import wait_for

POLL_INTERVAL_S = 30.0


class WaitCountingStore(PostgresJobStore):
    """The PostgreSQL store, counting the waits of its worker that may block."""

    def __init__(self, dsn: str | None = None) -> None:
        super().__init__(dsn)
        self.blocking_waits = 0

    def wait_for_jobs(self, queues: Sequence[str] | None, timeout_s: float) -> bool:
        if timeout_s > 0:
            self.blocking_waits += 1
        return super().wait_for_jobs(queues, timeout_s)


@pytest.fixture
def dsn(db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CABBAGE_DSN", db_dsn)
    return db_dsn


def test_an_idle_worker_wakes_on_notify_not_the_poll_interval(dsn: str) -> None:
    worker_manager = cabbage.TaskManager(store_class=WaitCountingStore)
    store = worker_manager.store
    assert isinstance(store, WaitCountingStore)
    started_at: list[float] = []
    worker_manager.task(name="ping", queue="pings")(lambda: started_at.append(time.monotonic()))
    deferring_manager = cabbage.TaskManager()  # another connection, as another program
    ping = deferring_manager.task(name="ping", queue="pings")(lambda: None)

    worker = cabbage.Worker(worker_manager, queues=["pings"], poll_interval_s=POLL_INTERVAL_S)
    thread = threading.Thread(target=worker.run)
    thread.start()
    latencies_s = []
    try:
        for round_number in range(1, 4):
            wait_for(lambda: store.blocking_waits >= round_number, 10, f"the worker to idle (round {round_number})")
            deferred_at = time.monotonic()
            ping.defer()
            wait_for(lambda: len(started_at) == round_number, 10, f"the job of round {round_number} to start")
            latencies_s.append(started_at[-1] - deferred_at)
    finally:
        worker.stop()
        thread.join(10)
        deferring_manager.store.close()
    assert not thread.is_alive()
    # Well below the 30 s poll interval: only the notification can have woken the worker.
    assert max(latencies_s) < 1.0, latencies_s


def test_an_idle_worker_starts_a_scheduled_job_when_due_not_at_the_poll_interval(dsn: str) -> None:
    worker_manager = cabbage.TaskManager(store_class=WaitCountingStore)
    store = worker_manager.store
    assert isinstance(store, WaitCountingStore)
    worker_manager.task(name="ping", queue="pings")(lambda: None)
    deferring_manager = cabbage.TaskManager()  # another connection, as another program
    ping = deferring_manager.task(name="ping", queue="pings")(lambda: None)
    later = ping.configure(schedule_in={"seconds": 600.0}).defer()

    worker = cabbage.Worker(worker_manager, queues=["pings"], poll_interval_s=POLL_INTERVAL_S)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: store.blocking_waits >= 1, 10, "the worker to idle, the later job due after its poll")
        # Its defer wakes the worker, which then waits until it is due rather than for its poll.
        sooner = ping.configure(schedule_in={"seconds": 0.5}).defer()
        ran = wait_for(lambda: (job := deferring_manager.store.get_job(sooner)) and job.status is Status.SUCCEEDED and job,
                       10, f"the sooner job to run, long before the {POLL_INTERVAL_S:g} s poll")  # fmt: skip
    finally:
        worker.stop()
        thread.join(10)
        deferring_manager.store.close()
    assert not thread.is_alive()
    assert ran.started_at >= ran.scheduled_at, "never before it is due, on the database clock"
    assert store.get_job(later).status is Status.TODO  # type: ignore[union-attr]


def _run_worker_until_terminated(task_manager: cabbage.TaskManager, batch_size: int) -> None:
    worker = cabbage.Worker(task_manager, poll_interval_s=1.0, batch_size=batch_size)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop())
    worker.run()


@pytest.fixture
def worker_processes() -> Iterator[list[Any]]:
    """Forked worker processes, stopped with SIGTERM (graceful) at the end of the test."""
    processes: list[Any] = []
    yield processes
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(15)
        if process.exitcode is None:
            process.kill()
            process.join()


@pytest.mark.timeout(90)
def test_eight_workers_race_over_three_locks(dsn: str, tmp_path: Path, worker_processes: list[Any]) -> None:
    record_path = tmp_path / "runs.txt"
    task_manager = cabbage.TaskManager()

    @task_manager.task(queue="race")
    def record_run(sequence: int, lock: str) -> None:
        started = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of this host
        time.sleep(random.uniform(0, 0.004))
        ended = time.monotonic()
        # One short O_APPEND write per job: lines of different processes never interleave.
        with open(record_path, "a") as runs:
            runs.write(f"{lock} {sequence} {started!r} {ended!r} {os.getpid()}\n")

    context = multiprocessing.get_context("fork")
    for number in range(8):
        batch_size = 3 if number % 2 else 1  # half of them claim in batches: finish_and_start races too
        worker_processes.append(context.Process(target=_run_worker_until_terminated, args=(task_manager, batch_size)))
        worker_processes[-1].start()
    locks = [f"lock-{number}" for number in range(3)]
    descriptions = {lock: record_run.configure(lock=lock) for lock in locks}
    for sequence in range(600):
        lock = locks[sequence % 3]  # interleaved: creation order spans the three lines
        descriptions[lock].defer(sequence, lock)

    wait_for(lambda: task_manager.store.count_jobs()[Status.SUCCEEDED] == 600, 60, "600 jobs to succeed")
    counts = task_manager.store.count_jobs()
    assert counts[Status.SUCCEEDED] == 600 and sum(counts.values()) == 600

    runs_by_lock: dict[str, list[tuple[float, float, int]]] = collections.defaultdict(list)
    pids = set()
    for line in record_path.read_text().splitlines():
        lock, number, started, ended, pid = line.split()
        runs_by_lock[lock].append((float(started), float(ended), int(number)))
        pids.add(pid)
    assert sorted(sequence for runs in runs_by_lock.values() for _, _, sequence in runs) == list(range(600))
    for lock, runs in runs_by_lock.items():
        runs.sort()
        assert [sequence for _, _, sequence in runs] == sorted(sequence for _, _, sequence in runs), f"{lock} out of order"
        for (_, previous_end, previous), (start, _, sequence) in zip(runs, runs[1:]):
            assert start >= previous_end, f"{lock}: job {sequence} started before job {previous} ended"
    assert len(pids) > 1  # the workers did race


@pytest.mark.timeout(60)
def test_a_prefetching_worker_holds_started_jobs_and_runs_each_once(dsn: str) -> None:
    task_manager = cabbage.TaskManager()
    release = threading.Event()
    ran: list[int] = []
    guard = threading.Lock()

    @task_manager.task(queue="prefetch")
    def hold(n: int) -> None:
        release.wait(30)
        with guard:
            ran.append(n)

    hold.defer_many([[n] for n in range(40)])
    worker = cabbage.Worker(task_manager, ["prefetch"], concurrency=3, prefetch=4, poll_interval_s=POLL_INTERVAL_S)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        # Three run, four more are started and held by this worker: seven doing in the table.
        wait_for(lambda: task_manager.store.count_jobs()[Status.DOING] == 7, 10, "three running and four prefetched jobs")
        assert worker.worker_id is not None
        held = task_manager.store.held_jobs(worker.worker_id)
        assert len(held) == 7 and all(job.attempts == 1 and job.is_started for job in held)
        assert worker.running_count == 3
        release.set()
        wait_for(lambda: task_manager.store.count_jobs()[Status.SUCCEEDED] == 40, 30, "every job to succeed")
    finally:
        release.set()
        worker.stop()
        thread.join(30)
    assert sorted(ran) == list(range(40))  # each once
    assert task_manager.store.count_jobs() == {**{status: 0 for status in Status}, Status.SUCCEEDED: 40}
