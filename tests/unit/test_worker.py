"""The worker loop on the in-memory store: outcomes, retries, jobs it cannot run, stopping,
batches, hooks, the heartbeat thread, and the log events each of them produces."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from typing import Any, Iterator

import pytest
import structlog

import cabbage
from cabbage.exceptions import DatabaseUnavailable
from cabbage.heartbeat import HeartbeatThread
from cabbage.jobs import Job, NewJob, Status
from cabbage.testing import InMemoryJobStore
from tests.waiting import wait_for


class RecordingStore(InMemoryJobStore):
    """The in-memory store, counting the worker's calls; ``rewrite_claimed`` alters claimed jobs
    the way a row written by another program could look."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.rewrite_claimed: dict[str, Any] = {}
        self._inside_compound_call = False

    def claim_jobs(self, worker_id: int, queues: Any, limit: int = 1, **options: Any) -> list[Job]:
        self._record("claim_jobs", limit)
        claimed = super().claim_jobs(worker_id, queues, limit, **options)
        return [dataclasses.replace(job, **self.rewrite_claimed) for job in claimed]

    def start_job(self, job_id: int, worker_id: int) -> Job | None:
        self._record("start_job", job_id)
        return super().start_job(job_id, worker_id)

    def finish_job(self, job_id: int, worker_id: int, attempt: int, outcome: Any) -> bool:
        self._record("finish_job", job_id)
        return super().finish_job(job_id, worker_id, attempt, outcome)

    def finish_and_start(self, job_id: int, worker_id: int, attempt: int, outcome: Any, next_job_id: int | None) -> Any:
        with self._compound_call("finish_and_start", (job_id, next_job_id)):
            return super().finish_and_start(job_id, worker_id, attempt, outcome, next_job_id)

    def finish_and_claim(self, job_id: int, worker_id: int, attempt: int, outcome: Any, queues: Any, limit: int) -> Any:
        with self._compound_call("finish_and_claim", (job_id, limit)):
            return super().finish_and_claim(job_id, worker_id, attempt, outcome, queues, limit)

    def release_jobs(self, job_ids: Any, worker_id: int) -> int:
        self._record("release_jobs", list(job_ids))
        return super().release_jobs(job_ids, worker_id)

    def _record(self, name: str, argument: Any) -> None:
        if not self._inside_compound_call:
            self.calls.append((name, argument))

    @contextlib.contextmanager
    def _compound_call(self, name: str, argument: Any) -> Iterator[None]:
        """One round trip of the PostgreSQL store: its parts are not the worker's calls."""
        self._record(name, argument)
        self._inside_compound_call = True
        try:
            yield
        finally:
            self._inside_compound_call = False

    def called(self, name: str) -> list[Any]:
        return [argument for call, argument in self.calls if call == name]


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=RecordingStore)


@pytest.fixture
def memory(task_manager: cabbage.TaskManager) -> RecordingStore:
    assert isinstance(task_manager.store, RecordingStore)
    return task_manager.store


def named(events: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] in names]


@pytest.fixture
def recorded() -> list[Any]:
    """What the test's tasks did, in order."""
    return []


@pytest.fixture
def write_alphabet(task_manager: cabbage.TaskManager, recorded: list[Any]) -> cabbage.Task:
    @task_manager.task(queue="queue")
    def write_alphabet(floor: str, case: str = "lower") -> None:
        recorded.append(floor.upper() if case == "upper" else floor)

    return write_alphabet


def statuses(memory: InMemoryJobStore) -> list[Status]:
    return [job.status for job in memory.jobs]


# -- process_jobs ----------------------------------------------------------------------------------


def test_process_jobs_runs_every_due_job_in_order(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any]
) -> None:
    for letter in "abc":
        write_alphabet.defer(letter)
    write_alphabet.defer(floor="d", case="upper")
    write_alphabet.configure(schedule_in={"hours": 1}).defer("later")

    assert cabbage.Worker(task_manager).process_jobs() == 4

    assert recorded == ["a", "b", "c", "D"]
    assert statuses(memory) == [Status.SUCCEEDED] * 4 + [Status.TODO]
    assert memory.list_workers() == []  # registered for the call, unregistered at the end


def test_process_jobs_keeps_a_given_worker_registered(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    worker_id = memory.register_worker("host", os.getpid(), None)
    write_alphabet.defer("a")
    worker = cabbage.Worker(task_manager, worker_id=worker_id)
    assert worker.process_jobs() == 1
    assert [info.worker_id for info in memory.list_workers()] == [worker_id]  # the caller unregisters it
    assert worker.worker_id == worker_id
    assert statuses(memory) == [Status.SUCCEEDED]


def test_queues_limit_what_the_worker_takes(task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    @task_manager.task(queue="mail")
    def send() -> None: ...

    @task_manager.task(queue="print")
    def print_page() -> None: ...

    send.defer()
    print_page.defer()
    assert cabbage.Worker(task_manager, queues=["print"]).process_jobs() == 1
    assert statuses(memory) == [Status.TODO, Status.SUCCEEDED]


def test_process_next_job_says_whether_it_found_one(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, recorded: list[Any]) -> None:
    worker = cabbage.Worker(task_manager)
    assert worker.process_next_job() is False
    write_alphabet.defer("a")
    assert worker.process_next_job() is True
    assert recorded == ["a"]


def test_a_lock_runs_its_jobs_in_creation_order(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, recorded: list[Any]) -> None:
    job_description = write_alphabet.configure(lock="/tmp/alphabet.txt")
    for letter in "abcd":
        job_description.defer(letter)
    cabbage.Worker(task_manager).process_jobs()
    assert recorded == list("abcd")


# -- failures and retries ----------------------------------------------------------------------------


def test_an_exception_is_recorded_on_the_job(task_manager: cabbage.TaskManager, memory: RecordingStore, events: list[dict[str, Any]]) -> None:
    @task_manager.task
    def create_bug(crash_everything: bool = False) -> None:
        raise OverflowError("2038")

    job_id = create_bug.defer(crash_everything=True)
    assert cabbage.Worker(task_manager).process_jobs() == 1

    job = memory.get_job(job_id)
    assert job is not None and job.status is Status.FAILED and job.attempts == 1
    assert job.last_error is not None
    assert (job.last_error.type, job.last_error.message) == ("OverflowError", "2038")
    assert 'raise OverflowError("2038")' in (job.last_error.traceback or "")
    [failed] = named(events, "job_failed")
    assert failed["log_level"] == "error"
    assert (failed["error_type"], failed["error"], failed["job_id"], failed["attempt"]) == ("OverflowError", "2038", job_id, 1)
    assert isinstance(failed["exc_info"], OverflowError)
    assert failed["duration_ms"] >= 0


def test_an_exception_type_outside_builtins_is_qualified(task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    class PrinterOnFire(Exception):
        pass

    @task_manager.task
    def print_page() -> None:
        raise PrinterOnFire("lp0")

    print_page.defer()
    cabbage.Worker(task_manager).process_jobs()
    assert memory.jobs[0].last_error.type == f"{__name__}.{PrinterOnFire.__qualname__}"  # type: ignore[union-attr]


def test_a_failed_attempt_is_retried_per_the_policy(task_manager: cabbage.TaskManager, memory: RecordingStore, events: list[dict[str, Any]]) -> None:
    attempts: list[int] = []

    @task_manager.task(retry=2)
    def flaky() -> None:
        attempts.append(len(attempts) + 1)
        raise ConnectionError(f"attempt {len(attempts)}")

    flaky.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 3  # due at once: all attempts run now

    assert attempts == [1, 2, 3]
    job = memory.jobs[0]
    assert (job.status, job.attempts, job.last_error.message) == (Status.FAILED, 3, "attempt 3")  # type: ignore[union-attr]
    outcomes = named(events, "job_retry_scheduled", "job_failed")
    assert [(event["event"], event["log_level"], event["attempt"]) for event in outcomes] == [
        ("job_retry_scheduled", "warning", 1),
        ("job_retry_scheduled", "warning", 2),
        ("job_failed", "error", 3),
    ]
    assert outcomes[0]["retry_in_s"] == 0.0 and outcomes[0]["error_type"] == "ConnectionError"


def test_a_retry_with_a_wait_is_not_due_now(task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    @task_manager.task(retry=cabbage.RetryPolicy(max_attempts=3, wait_s=60))
    def flaky() -> None:
        raise ConnectionError("down")

    flaky.defer()
    before = time.time()
    assert cabbage.Worker(task_manager).process_jobs() == 1
    job = memory.jobs[0]
    assert (job.status, job.attempts) == (Status.TODO, 1)
    assert job.scheduled_at.timestamp() >= before + 59


def test_an_exception_outside_retry_on_fails_at_once(task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    @task_manager.task(retry=cabbage.RetryPolicy(max_attempts=5, retry_on=(ConnectionError,)))
    def parse() -> None:
        raise ValueError("bad input")

    parse.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 1
    assert (memory.jobs[0].status, memory.jobs[0].attempts) == (Status.FAILED, 1)


def test_the_job_keeps_the_attempt_limit_it_was_deferred_with(task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    @task_manager.task(name="flaky", retry=True)
    def flaky() -> None:
        raise ConnectionError("down")

    memory.defer_job(NewJob(queue="default", task_name="flaky", max_attempts=2))
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert (memory.jobs[0].status, memory.jobs[0].attempts) == (Status.FAILED, 2)


def test_keyboard_interrupt_in_a_task_fails_its_job_then_stops_a_worker_run_by_hand(
    task_manager: cabbage.TaskManager, memory: RecordingStore
) -> None:
    @task_manager.task(retry=1)
    def interrupted() -> None:
        raise KeyboardInterrupt

    interrupted.defer()
    with pytest.raises(KeyboardInterrupt):
        cabbage.Worker(task_manager).process_jobs()

    job = memory.jobs[0]
    # Recorded as the task's own failure, then raised again: Ctrl-C still stops the worker.
    assert (job.status, job.attempts) == (Status.FAILED, 1)
    assert job.last_error.type == "KeyboardInterrupt"  # type: ignore[union-attr]
    assert memory.list_workers() == []


def test_keyboard_interrupt_and_system_exit_fail_their_jobs_and_the_worker_goes_on(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any]
) -> None:
    @task_manager.task
    def interrupted() -> None:
        raise KeyboardInterrupt

    @task_manager.task
    def exits() -> None:
        sys.exit(3)

    first, second = interrupted.defer(), exits.defer()
    write_alphabet.defer("a")
    # As in the supervisor's children, which ignore Ctrl-C: a KeyboardInterrupt is the task's own.
    assert cabbage.Worker(task_manager, stop_on_keyboard_interrupt=False).process_jobs() == 3
    assert [(job.status, job.last_error and job.last_error.type) for job in map(memory.get_job, (first, second))] == [  # type: ignore[union-attr]
        (Status.FAILED, "KeyboardInterrupt"),
        (Status.FAILED, "SystemExit"),
    ]
    assert recorded == ["a"]


# -- jobs the worker cannot run ----------------------------------------------------------------------


def test_an_unknown_task_fails_its_job_and_the_worker_goes_on(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any], events: list[dict[str, Any]]
) -> None:
    memory.defer_job(NewJob(queue="queue", task_name="x.y", max_attempts=3))
    write_alphabet.defer("a")

    assert cabbage.Worker(task_manager).process_jobs() == 2

    unknown = memory.jobs[0]
    assert (unknown.status, unknown.attempts) == (Status.FAILED, 1)  # no retry: it cannot ever run here
    assert unknown.last_error is not None and unknown.last_error.type == "TaskNotFound"
    assert unknown.last_error.message == f"task 'x.y' is not declared in this app (known: {write_alphabet.name})"
    assert recorded == ["a"]
    [failed] = named(events, "job_failed")
    assert (failed["task_name"], failed["error_type"]) == ("x.y", "TaskNotFound")


@pytest.mark.parametrize("args", ["not a list", 42, {1: "a"}])
def test_undecodable_arguments_fail_the_job(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, args: Any
) -> None:
    write_alphabet.defer("a")
    memory.rewrite_claimed = {"args": args}
    assert cabbage.Worker(task_manager).process_jobs() == 1
    job = memory.jobs[0]
    assert job.status is Status.FAILED
    assert job.last_error is not None and job.last_error.type == "UndecodableArguments"
    assert f"of job {job.id}" in job.last_error.message


def test_a_json_object_in_args_means_keyword_arguments(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any]
) -> None:
    write_alphabet.defer()
    memory.rewrite_claimed = {"args": {"floor": "z"}, "kwargs": {"case": "upper"}}
    cabbage.Worker(task_manager).process_jobs()
    assert recorded == ["Z"]
    assert memory.jobs[0].status is Status.SUCCEEDED


# -- log context and events ------------------------------------------------------------------------


def test_the_tasks_own_log_lines_carry_the_job_context(task_manager: cabbage.TaskManager, memory: RecordingStore, events: list[dict[str, Any]]) -> None:
    @task_manager.task(queue="queue", lock="L")
    def chatty() -> None:
        structlog.get_logger().info("user_line")

    job_id = chatty.defer()
    worker = cabbage.Worker(task_manager)
    worker.process_jobs()

    [user_line] = named(events, "user_line")
    expected = {"job_id": job_id, "task_name": chatty.name, "queue": "queue", "lock": "L", "attempt": 1}
    assert expected.items() <= user_line.items()
    assert isinstance(user_line["worker_id"], int)
    assert structlog.contextvars.get_contextvars() == {}  # unbound after the job


def test_one_line_per_outcome(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, events: list[dict[str, Any]]) -> None:
    job_id = write_alphabet.defer("a")
    cabbage.Worker(task_manager).process_jobs()
    started, succeeded = named(events, "job_started", "job_succeeded")
    assert (started["event"], started["log_level"], started["job_id"]) == ("job_started", "info", job_id)
    assert (succeeded["event"], succeeded["log_level"], succeeded["job_id"]) == ("job_succeeded", "info", job_id)
    assert succeeded["duration_ms"] >= 0


def test_a_reclaimed_attempt_logs_the_lost_fence_and_changes_nothing(
    task_manager: cabbage.TaskManager, memory: RecordingStore, events: list[dict[str, Any]]
) -> None:
    worker = cabbage.Worker(task_manager)

    @task_manager.task
    def slow() -> None:
        assert worker.worker_id is not None
        memory.reclaim_jobs_of([worker.worker_id], "no heartbeat for 30 s")  # what a master would do

    slow.defer()
    assert worker.process_jobs() == 1

    job = memory.jobs[0]
    assert job.status is Status.FAILED  # as the reclaim left it, not succeeded
    assert job.last_error.message == "worker lost: no heartbeat for 30 s"  # type: ignore[union-attr]
    [lost] = named(events, "job_fence_lost")
    assert (lost["log_level"], lost["outcome"], lost["job_id"]) == ("warning", "succeeded", job.id)


def test_a_finish_cut_off_by_a_lost_connection_is_tried_once_more(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, events: list[dict[str, Any]]
) -> None:
    original_finish = memory.finish_job
    failures = ["connection lost"]

    def finish_once_cut_off(*args: Any) -> bool:
        if failures:
            raise DatabaseUnavailable(failures.pop())
        return original_finish(*args)

    memory.finish_job = finish_once_cut_off  # type: ignore[method-assign]
    write_alphabet.defer("a")
    assert cabbage.Worker(task_manager).process_jobs() == 1
    assert statuses(memory) == [Status.SUCCEEDED]
    [retried] = named(events, "job_finish_retried")
    assert (retried["log_level"], retried["error"]) == ("warning", "connection lost")
    assert not named(events, "job_fence_lost")


def test_hooks_are_called_around_each_job(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, recorded: list[Any]) -> None:
    ids = [write_alphabet.defer(letter) for letter in "ab"]
    worker = cabbage.Worker(task_manager)
    worker.on_job_started = lambda job: recorded.append(("started", job.id, job.status))
    worker.on_job_finished = lambda job: recorded.append(("finished", job.id))
    worker.process_jobs()
    assert recorded == [
        ("started", ids[0], Status.DOING), "a", ("finished", ids[0]),
        ("started", ids[1], Status.DOING), "b", ("finished", ids[1]),
    ]


# -- stopping and run() ------------------------------------------------------------------------------


def test_stop_lets_the_current_job_finish_and_takes_no_more(task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    worker = cabbage.Worker(task_manager)

    @task_manager.task
    def stopper() -> None:
        worker.stop()

    stopper.defer()
    stopper.defer()
    assert worker.process_jobs() == 1
    assert worker.is_stopping
    assert statuses(memory) == [Status.SUCCEEDED, Status.TODO]


def test_run_returns_after_max_jobs(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, events: list[dict[str, Any]]) -> None:
    for letter in "abc":
        write_alphabet.defer(letter)
    cabbage.Worker(task_manager).run(max_jobs=2)
    assert statuses(memory) == [Status.SUCCEEDED, Status.SUCCEEDED, Status.TODO]
    lifecycle = named(events, "worker_started", "worker_stopping", "worker_exited")
    assert [event["event"] for event in lifecycle] == ["worker_started", "worker_stopping", "worker_exited"]
    assert (lifecycle[1]["reason"], lifecycle[2]["jobs_run"]) == ("max_jobs reached", 2)
    assert memory.list_workers() == []


def test_run_waits_for_a_deferred_job_and_stops_when_told(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any], events: list[dict[str, Any]]
) -> None:
    worker = cabbage.Worker(task_manager, poll_interval_s=30)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(memory.list_workers, 5, "the worker to register")
        write_alphabet.defer("a")  # wakes the idle worker: far sooner than the 30 s poll
        wait_for(lambda: recorded == ["a"], 5, "the deferred job to run")
    finally:
        worker.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert memory.list_workers() == []
    stopping = named(events, "worker_stopping")
    assert stopping[0]["reason"] == "stop requested"


# -- batches -------------------------------------------------------------------------------------


def test_a_batch_claims_several_and_chains_finish_and_start(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any]
) -> None:
    ids = [write_alphabet.defer(letter) for letter in "abcde"]
    assert cabbage.Worker(task_manager, batch_size=3).process_jobs() == 5
    assert recorded == list("abcde")
    assert statuses(memory) == [Status.SUCCEEDED] * 5
    assert [job.attempts for job in memory.jobs] == [1] * 5
    # One claim, then each finish starts the next reserved job or claims the next batch.
    assert memory.called("claim_jobs") == [3]
    assert memory.called("finish_and_start") == [(ids[0], ids[1]), (ids[1], ids[2]), (ids[3], ids[4])]
    assert memory.called("finish_and_claim") == [(ids[2], 3), (ids[4], 3)]
    assert memory.called("finish_job") == []


def test_one_job_at_a_time_is_one_round_trip_per_job(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any]
) -> None:
    ids = [write_alphabet.defer(letter) for letter in "abc"]
    assert cabbage.Worker(task_manager).process_jobs() == 3
    assert recorded == list("abc")
    # The last finish found nothing to claim: the loop ends without claiming once more.
    assert [call for call, _ in memory.calls] == ["claim_jobs"] + ["finish_and_claim"] * 3
    assert memory.called("finish_and_claim") == [(job_id, 1) for job_id in ids]


def test_jobs_claimed_by_a_finish_cut_off_after_its_commit_are_run(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore,
    recorded: list[Any], events: list[dict[str, Any]],
) -> None:
    original_finish_and_claim = memory.finish_and_claim
    failures = ["connection lost"]

    def committed_then_cut_off(*args: Any) -> Any:
        result = original_finish_and_claim(*args)
        if failures:
            raise DatabaseUnavailable(failures.pop())
        return result

    memory.finish_and_claim = committed_then_cut_off  # type: ignore[method-assign]
    for letter in "abcd":
        write_alphabet.defer(letter)
    assert cabbage.Worker(task_manager, batch_size=2).process_jobs() == 4
    # b's finish claimed c (started) and d (reserved), then lost its connection: the worker took
    # both over rather than leave them held by a worker that forgot them.
    assert memory.called("finish_and_claim")[0] == (memory.jobs[1].id, 2)
    assert recorded == list("abcd")
    assert statuses(memory) == [Status.SUCCEEDED] * 4
    assert [job.attempts for job in memory.jobs] == [1, 1, 1, 1]
    assert named(events, "job_finish_retried")


def test_a_batch_skips_a_job_taken_back_before_it_started(
    task_manager: cabbage.TaskManager, memory: RecordingStore, recorded: list[Any]
) -> None:
    worker = cabbage.Worker(task_manager, batch_size=3)

    @task_manager.task
    def step(name: str) -> None:
        recorded.append(name)
        if name == "a":
            assert worker.worker_id is not None
            memory.release_jobs([memory.jobs[1].id], worker.worker_id)  # as a reclaim would

    for name in "abc":
        step.defer(name)
    assert worker.process_jobs() == 3
    assert sorted(recorded) == ["a", "b", "c"]  # each ran exactly once
    assert statuses(memory) == [Status.SUCCEEDED] * 3


@pytest.mark.parametrize("registered_by", ["itself", "the caller"])
def test_stopping_in_a_batch_gives_back_the_jobs_not_started(
    task_manager: cabbage.TaskManager, memory: RecordingStore, registered_by: str
) -> None:
    worker_id = memory.register_worker("host", 1, None) if registered_by == "the caller" else None
    worker = cabbage.Worker(task_manager, batch_size=4, worker_id=worker_id)

    @task_manager.task
    def stopper() -> None:
        worker.stop()

    ids = [stopper.defer() for _ in range(4)]
    assert worker.process_jobs() == 1
    assert statuses(memory) == [Status.SUCCEEDED, Status.TODO, Status.TODO, Status.TODO]
    assert [job.attempts for job in memory.jobs] == [1, 0, 0, 0]  # given back without using an attempt
    if registered_by == "the caller":
        assert memory.called("release_jobs") == [ids[1:]]  # its row stays: the caller unregisters it
        assert [info.worker_id for info in memory.list_workers()] == [worker_id]
    else:
        assert memory.list_workers() == []  # unregistering gave them back


def test_max_jobs_bounds_what_a_batch_claims(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, memory: RecordingStore) -> None:
    for letter in "abcde":
        write_alphabet.defer(letter)
    cabbage.Worker(task_manager, batch_size=10).run(max_jobs=2)
    assert memory.called("claim_jobs") == [2]
    assert statuses(memory) == [Status.SUCCEEDED] * 2 + [Status.TODO] * 3


# -- the heartbeat thread ---------------------------------------------------------------------------


@contextlib.contextmanager
def running(heartbeat: HeartbeatThread) -> Iterator[HeartbeatThread]:
    heartbeat.start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()
        heartbeat.join(5)
    assert not heartbeat.is_alive()


def test_the_heartbeat_is_recorded_every_interval() -> None:
    memory = InMemoryJobStore()
    worker_id = memory.register_worker("host", os.getpid(), None)
    registered_at = memory.list_workers()[0].last_heartbeat_at
    with running(HeartbeatThread(memory, worker_id, interval_s=0.02)):
        wait_for(lambda: memory.list_workers()[0].last_heartbeat_at > registered_at, 5, "a heartbeat")


def test_stop_ends_the_heartbeat_at_once() -> None:
    memory = InMemoryJobStore()
    heartbeat = HeartbeatThread(memory, memory.register_worker("host", 1, None), interval_s=60)
    heartbeat.start()
    started = time.monotonic()
    heartbeat.stop()
    heartbeat.join(5)
    assert not heartbeat.is_alive()
    assert time.monotonic() - started < 5  # not the 60 s interval
    heartbeat.stop()  # again, after the end: harmless


def test_a_lost_row_is_reported_once(events: list[dict[str, Any]]) -> None:
    memory = InMemoryJobStore()
    worker_id = memory.register_worker("host", 1, None)
    lost: list[str] = []
    heartbeat = HeartbeatThread(memory, worker_id, interval_s=0.01, on_row_lost=lambda: lost.append("row"))
    memory.reclaim_jobs_of([worker_id], "no heartbeat for 30 s")
    with running(heartbeat):
        wait_for(lambda: lost, 5, "on_row_lost")
        heartbeat.join(5)  # the thread ends by itself
    assert lost == ["row"]
    [reclaimed] = named(events, "worker_reclaimed")
    assert (reclaimed["log_level"], reclaimed["worker_id"]) == ("warning", worker_id)


def test_master_death_is_noticed_at_once_through_the_pipe(events: list[dict[str, Any]]) -> None:
    memory = InMemoryJobStore()
    read_fd, write_fd = os.pipe()
    lost = threading.Event()
    heartbeat = HeartbeatThread(memory, 1, interval_s=60, master_alive_fd=read_fd, on_master_lost=lost.set)
    try:
        with running(heartbeat):
            os.close(write_fd)  # what the master's death does to the pipe
            assert lost.wait(5), "on_master_lost was not called"
    finally:
        os.close(read_fd)
    assert named(events, "master_lost")[0]["log_level"] == "error"


def test_a_failing_heartbeat_is_logged_and_retried(events: list[dict[str, Any]]) -> None:
    class FlakyStore(InMemoryJobStore):
        failures = 2

        def record_heartbeat(self, worker_id: int) -> bool:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("server closed the connection (postgresql://app:secret@db/app)")
            return super().record_heartbeat(worker_id)

    memory = FlakyStore()
    worker_id = memory.register_worker("host", 1, None)
    registered_at = memory.list_workers()[0].last_heartbeat_at
    with running(HeartbeatThread(memory, worker_id, interval_s=0.01)):
        wait_for(lambda: memory.list_workers()[0].last_heartbeat_at > registered_at, 5, "a heartbeat after the failures")
    # One line when the failures start, one when a heartbeat is accepted again.
    [failed] = named(events, "heartbeat_failed")
    assert (failed["log_level"], failed["error_type"], failed["worker_id"]) == ("warning", "ConnectionError", worker_id)
    [resumed] = named(events, "heartbeat_resumed")
    assert (resumed["log_level"], resumed["worker_id"]) == ("info", worker_id)


def test_the_heartbeat_logger_carries_the_starting_threads_context(events: list[dict[str, Any]]) -> None:
    memory = InMemoryJobStore()
    with structlog.contextvars.bound_contextvars(role="worker", worker_number=3):
        heartbeat = HeartbeatThread(memory, 99, interval_s=0.01)  # no row: the first beat finds it gone
    with running(heartbeat):
        wait_for(lambda: named(events, "worker_reclaimed"), 5, "the heartbeat's log line")
    [line] = named(events, "worker_reclaimed")
    assert (line["role"], line["worker_number"], line["worker_id"]) == ("worker", 3, 99)


def test_the_heartbeat_logger_binds_its_own_worker_id_over_an_inherited_one(events: list[dict[str, Any]]) -> None:
    memory = InMemoryJobStore()
    with structlog.contextvars.bound_contextvars(role="worker", worker_id=7):
        heartbeat = HeartbeatThread(memory, 99, interval_s=0.01)
    with running(heartbeat):
        wait_for(lambda: named(events, "worker_reclaimed"), 5, "the heartbeat's log line")
    [line] = named(events, "worker_reclaimed")
    assert (line["role"], line["worker_id"]) == ("worker", 99)
