"""Every Python snippet of the how-to (docs/howto.rst) runs as written, against PostgreSQL.

The snippets are read from the document itself and executed, so the text cannot drift from
what works. The task they declare is ``examples.tasks.write_alphabet``; its file and its
random wait of up to 5 s are moved and shortened through CABBAGE_EXAMPLES_DIR and
CABBAGE_EXAMPLES_MAX_SLEEP_S, the only differences from the how-to's text.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import inspect
import multiprocessing
import os
import random
import signal
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest

import cabbage
from cabbage import store
from cabbage.jobs import Status
from cabbage.postgres import PostgresJobStore
from cabbage.testing import InMemoryJobStore
from tests.waiting import wait_for

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto.rst"


def literal_blocks(text: str) -> list[str]:
    """The reStructuredText literal blocks (after a paragraph ending in ``::``), dedented."""
    blocks: list[str] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if not line.rstrip().endswith("::"):
            continue
        body: list[str] = []
        for following in lines[index + 1 :]:
            if following.strip() and not following.startswith((" ", "\t")):
                break
            body.append(following)
        blocks.append(textwrap.dedent("\n".join(body)).strip("\n"))
    return blocks


# The Python snippets, each by a line of its own; the tests below run every one of them.
SNIPPETS = {
    "task": "def write_alphabet(floor):",
    "defer": 'write_alphabet.defer("a")',
    "lock": 'write_alphabet.configure(lock="/tmp/alphabet.txt")',
    "schedule_at": "create_bug.configure(schedule_at=dt)",
    "schedule_in": "clean.configure(schedule_in=",
    "priority": "def send_password_reset(address):",
    "queueing_lock": "def on_profile_change(user_id):",
    "attempts": "def call_the_api():",
    "middleware": "def task(*args, **kwargs):",
    "middleware_api": "@task_manager.middleware",
    "testing": "if running_tests:",
}


def snippet(name: str) -> str:
    [found] = [block for block in literal_blocks(HOWTO.read_text()) if SNIPPETS[name] in block]
    return found


def is_output_or_shell(block: str) -> bool:
    """The file's expected contents (one letter a line) and the commands of the deployment
    section (run by the CLI's and the supervisor's own tests)."""
    lines = block.splitlines()
    return all(len(line.strip()) == 1 for line in lines) or all(line.startswith("cabbage") for line in lines)


def test_every_python_snippet_of_the_howto_is_run_here() -> None:
    blocks = literal_blocks(HOWTO.read_text())
    untested = [block for block in blocks if not is_output_or_shell(block) and not any(key in block for key in SNIPPETS.values())]
    assert not untested, f"add these how-to snippets to SNIPPETS and run them in a test: {untested}"
    assert sorted(snippet(name) for name in SNIPPETS) == sorted(block for block in blocks if not is_output_or_shell(block))


def run_snippet(code: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "howto", "cabbage": cabbage, "store": store, "datetime": datetime}
    namespace.update(names)
    exec(compile(code, str(HOWTO), "exec"), namespace)
    return namespace


@pytest.fixture
def examples(db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A fresh import of examples.tasks, on the test's database and writing into tmp_path."""
    monkeypatch.setenv("CABBAGE_DSN", db_dsn)
    monkeypatch.setenv("CABBAGE_EXAMPLES_DIR", str(tmp_path))
    monkeypatch.setenv("CABBAGE_EXAMPLES_MAX_SLEEP_S", "0.2")
    for name in ("examples.tasks", "examples.middleware"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("examples.tasks")
    yield module
    module.task_manager.store.close()


# -- "Ensure jobs don't run concurrently and run in order" -------------------------------------------


def test_the_task_snippet_is_the_example_task(examples: types.ModuleType) -> None:
    """examples.tasks.write_alphabet is the how-to's task, with the file and the wait made settable."""
    declared = run_snippet(
        snippet("task"),
        task_manager=cabbage.TaskManager(store_class=InMemoryJobStore),
        time=time,
        random=random,
    )["write_alphabet"]
    assert declared.queue == "queue"
    example_source = textwrap.dedent(inspect.getsource(examples.write_alphabet.func)).strip()
    as_in_howto = example_source.replace("ALPHABET_PATH", '"/tmp/alphabet.txt"').replace("MAX_SLEEP_S", "5")
    assert as_in_howto == snippet("task")
    assert examples.ALPHABET_PATH == os.path.join(os.environ["CABBAGE_EXAMPLES_DIR"], "alphabet.txt")


def test_deferring_without_a_lock(examples: types.ModuleType) -> None:
    code = snippet("defer")
    before = examples.task_manager.store.count_jobs()[Status.TODO]
    run_snippet(code, write_alphabet=examples.write_alphabet)
    assert examples.task_manager.store.count_jobs()[Status.TODO] == before + 4
    assert cabbage.Worker(examples.task_manager).process_jobs() == 4
    assert sorted(Path(examples.ALPHABET_PATH).read_text()) == list("abcd")


def _run_worker_until_terminated(task_manager: cabbage.TaskManager) -> None:
    """A worker process: run() until SIGTERM, whose handler only calls stop()."""
    worker = cabbage.Worker(task_manager, queues=["queue"], poll_interval_s=1.0)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop())
    worker.run()


@pytest.mark.timeout(60)
def test_a_lock_runs_the_alphabet_in_order_across_four_workers(examples: types.ModuleType) -> None:
    task_manager = examples.task_manager
    namespace = run_snippet(snippet("lock"), write_alphabet=examples.write_alphabet)
    assert namespace["job_description"].lock == "/tmp/alphabet.txt"

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_run_worker_until_terminated, args=(task_manager,)) for _ in range(4)]
    for process in workers:
        process.start()
    try:
        wait_for(lambda: task_manager.store.count_jobs()[Status.SUCCEEDED] == 4, 30, "the four letters to be written")
    finally:
        for process in workers:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in workers:
            process.join(10)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]
    assert Path(examples.ALPHABET_PATH).read_text() == "abcd"
    assert task_manager.store.list_workers() == []  # each worker unregistered as it stopped


# -- "Launch a job in the future" ---------------------------------------------------------------------


def test_schedule_at_2038_is_stored_and_not_run_now(examples: types.ModuleType) -> None:
    run_snippet(snippet("schedule_at"), create_bug=examples.create_bug)
    [job] = [job for job in _all_jobs(examples.task_manager) if job.task_name == examples.create_bug.name]
    assert job.scheduled_at == datetime.datetime(2038, 1, 19, 3, 14, 7, tzinfo=datetime.timezone.utc)
    assert job.kwargs == {"crash_everything": True}
    assert cabbage.Worker(examples.task_manager).process_jobs() == 0
    assert examples.task_manager.store.get_job(job.id).status is Status.TODO


def test_schedule_in_counts_on_the_database_clock(examples: types.ModuleType) -> None:
    run_snippet(snippet("schedule_in"), clean=examples.clean)
    [job] = [job for job in _all_jobs(examples.task_manager) if job.task_name == examples.clean.name]
    assert (job.scheduled_at - job.created_at).total_seconds() == pytest.approx(5400, abs=1)
    assert cabbage.Worker(examples.task_manager).process_jobs() == 0


def _all_jobs(task_manager: cabbage.TaskManager) -> list[Any]:
    # The snippets do not keep the ids defer() returns: list every job of the test's database.
    with contextlib.closing(psycopg2.connect(os.environ["CABBAGE_DSN"])) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM cabbage_jobs ORDER BY id")
        return [task_manager.store.get_job(job_id) for (job_id,) in cursor.fetchall()]


# -- "Run some jobs before others", "Defer a job only if none is waiting already", "See what each
# attempt did" ---------------------------------------------------------------------------------------


def store_of_kind(store_class: type, db_dsn: str) -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=store_class, **({"dsn": db_dsn} if store_class is PostgresJobStore else {}))


def printed_into(lines: list[str]) -> Any:
    """A print for a snippet that keeps its lines apart from the worker's log lines on stdout."""
    return lambda *values: lines.append(" ".join(map(str, values)))


@pytest.mark.parametrize("store_class", [InMemoryJobStore, PostgresJobStore])
def test_higher_priorities_run_first(db_dsn: str, store_class: type) -> None:
    task_manager, printed = store_of_kind(store_class, db_dsn), []
    run_snippet(snippet("priority"), task_manager=task_manager, print=printed_into(printed))
    assert cabbage.Worker(task_manager).process_jobs() == 3
    assert printed == ["reset link sent to ada@example.com", "newsletter 41 sent", "newsletter 42 sent"]
    task_manager.store.close()


@pytest.mark.parametrize("store_class", [InMemoryJobStore, PostgresJobStore])
def test_a_queueing_lock_defers_once_while_a_job_waits(db_dsn: str, store_class: type) -> None:
    task_manager, printed = store_of_kind(store_class, db_dsn), []
    namespace = run_snippet(snippet("queueing_lock"), task_manager=task_manager, print=printed_into(printed))
    worker_id = task_manager.store.register_worker("test-host", 1, None)
    (waiting,) = task_manager.store.claim_jobs(worker_id, None)
    assert printed == [f"job {waiting.id} will refresh the stats of user 42"]
    namespace["on_profile_change"](42)  # the waiting job started: a new one is deferred
    assert len(printed) == 1 and task_manager.store.count_jobs()[Status.TODO] == 1
    task_manager.store.close()


@pytest.mark.parametrize("store_class", [InMemoryJobStore, PostgresJobStore])
def test_each_attempt_is_kept(db_dsn: str, store_class: type) -> None:
    task_manager, printed = store_of_kind(store_class, db_dsn), []
    run_snippet(snippet("attempts"), task_manager=task_manager, print=printed_into(printed))
    assert printed == [
        f"{number} {outcome} ConnectionError: the API is down"
        for number, outcome in ((1, "retried"), (2, "retried"), (3, "failed"))
    ]
    task_manager.store.close()


# -- "Add a task middleware" ---------------------------------------------------------------------------


def test_the_middleware_wraps_every_task(db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CABBAGE_DSN", db_dsn)
    task_manager = cabbage.TaskManager()
    calls: list[str] = []
    namespace = run_snippet(
        snippet("middleware"),
        task_manager=task_manager,
        log_something=lambda: calls.append("before"),
        log_something_else=lambda: calls.append("after"),
    )

    @namespace["task"](queue="queue")
    def shout(word: str) -> None:
        calls.append(word.upper())

    @namespace["task"](queue="queue")  # "to all of the tasks": a second one, and more, work too
    def whisper(word: str) -> None:
        calls.append(word.lower())

    local = f"{__name__}.test_the_middleware_wraps_every_task.<locals>"
    assert (shout.name, whisper.name) == (f"{local}.shout", f"{local}.whisper")
    job_ids = [shout.defer("Cabbage"), whisper.defer("Cabbage")]
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert [task_manager.store.get_job(job_id).status for job_id in job_ids] == [Status.SUCCEEDED] * 2  # type: ignore[union-attr]
    assert calls == ["before", "CABBAGE", "before", "cabbage"]  # as written, the line after `return` never runs


def test_the_middleware_api_logs_before_and_after_every_task(examples: types.ModuleType) -> None:
    calls: list[str] = []
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)
    run_snippet(
        snippet("middleware_api"),
        task_manager=task_manager,
        log_something=lambda: calls.append("before"),
        log_something_else=lambda: calls.append("after"),
    )

    @task_manager.task(queue="queue")
    def shout(word: str) -> None:
        calls.append(word.upper())

    @task_manager.task(queue="queue")
    def crash() -> None:
        raise RuntimeError("boom")

    shout.defer("cabbage")
    crash.defer()
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert calls == ["before", "CABBAGE", "after", "before", "after"]  # after a failure too
    assert [job.status for job in task_manager.store.jobs] == [Status.SUCCEEDED, Status.FAILED]  # type: ignore[attr-defined]


def test_the_middleware_example_module(examples: types.ModuleType) -> None:
    middleware = importlib.import_module("examples.middleware")
    assert (middleware.shout.name, middleware.whisper.name) == ("examples.middleware.shout", "examples.middleware.whisper")
    wrapper = textwrap.dedent(inspect.getsource(middleware.task)).strip()
    assert wrapper == snippet("middleware"), "examples/middleware.py uses the how-to's wrapper as written"
    job_ids = [middleware.shout.defer("cabbage"), middleware.whisper.defer("CABBAGE")]
    assert cabbage.Worker(examples.task_manager).process_jobs() == 2
    assert [examples.task_manager.store.get_job(job_id).status for job_id in job_ids] == [Status.SUCCEEDED] * 2


# -- "Test your code that uses cabbage" --------------------------------------------------------------


@pytest.mark.parametrize(("running_tests", "store_class"), [(True, InMemoryJobStore), (False, PostgresJobStore)])
def test_the_testing_snippet_with_both_stores(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch, running_tests: bool, store_class: type
) -> None:
    monkeypatch.setenv("CABBAGE_DSN", db_dsn)
    namespace = run_snippet(snippet("testing"), running_tests=running_tests)
    task_manager = namespace["task_manager"]
    assert type(task_manager.store) is store_class
    done: list[str] = []

    @task_manager.task(queue="queue")
    def write_alphabet(floor: str) -> None:
        done.append(floor)

    write_alphabet.defer("a")
    write_alphabet.configure(lock="/tmp/alphabet.txt").defer("b")
    assert cabbage.Worker(task_manager).process_jobs() == 2  # the snippet's last line
    assert done == ["a", "b"]
