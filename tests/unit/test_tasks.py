"""The task API: declaring tasks, deferring them, and every bad input refused before any insert."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import functools
import logging
import math
import re
import subprocess
import sys
import uuid
from typing import Any, Callable

import pytest
import structlog

import cabbage
from cabbage import schedules, store
from cabbage.exceptions import (
    CabbageError,
    ConfigurationError,
    ScheduleError,
    TaskAlreadyRegistered,
    TaskNotFound,
    UnserialisableArgumentError,
)
from cabbage.jobs import Status
from cabbage.testing import InMemoryJobStore, ManualClock

UTC = datetime.timezone.utc


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=store.load_store_from_path("cabbage.testing.InMemoryJobStore"))


@pytest.fixture
def memory(task_manager: cabbage.TaskManager) -> InMemoryJobStore:
    assert isinstance(task_manager.store, InMemoryJobStore)
    return task_manager.store


@pytest.fixture
def write_alphabet(task_manager: cabbage.TaskManager) -> cabbage.Task:
    @task_manager.task(queue="queue")
    def write_alphabet(floor: Any) -> str:
        return f"wrote {floor}"

    return write_alphabet


# -- declaring -----------------------------------------------------------------------------------


def test_the_public_names_are_exported() -> None:
    assert {"TaskManager", "Worker", "Task", "RetryPolicy", "Status", "Job", "store"} <= set(cabbage.__all__)
    assert cabbage.store.load_store_from_path is store.load_store_from_path
    assert issubclass(cabbage.UnserialisableArgumentError, cabbage.CabbageError)


def test_a_task_keeps_its_options(task_manager: cabbage.TaskManager) -> None:
    policy = cabbage.RetryPolicy(max_attempts=4, wait_s=1)

    @task_manager.task(queue="mail", name="mail.send", retry=policy, timeout=30, lock="smtp")
    def send(address: str) -> None: ...

    assert task_manager.tasks == {"mail.send": send}
    assert (send.name, send.queue, send.retry_policy, send.timeout_s, send.lock) == ("mail.send", "mail", policy, 30.0, "smtp")


def test_the_bare_decorator_names_the_task_after_module_and_qualname(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task
    def clean() -> None: ...

    assert clean.name == f"{__name__}.test_the_bare_decorator_names_the_task_after_module_and_qualname.<locals>.clean"
    assert clean.queue == "default"
    assert clean.retry_policy.max_attempts == 1
    assert clean.timeout_s is None
    assert task_manager.get_task(clean.name) is clean


def howto_task_decorator(task_manager: cabbage.TaskManager, calls: list[str]) -> Callable[..., Any]:
    """The how-to's own ``@task`` wrapper, as written there (its logging made observable)."""
    log_something = functools.partial(calls.append, "before")
    log_something_else = functools.partial(calls.append, "after")

    def task(*args: Any, **kwargs: Any) -> Callable[..., Any]:
        def wrap(func: Callable[..., Any]) -> cabbage.Task:
            def new_func(*job_args: Any, **job_kwargs: Any) -> Any:
                log_something()
                return func(*job_args, **job_kwargs)
                log_something_else()

            return task_manager.task(*args, **kwargs)(new_func)
        return wrap

    return task


def test_tasks_made_by_one_wrapper_are_named_after_their_own_functions(task_manager: cabbage.TaskManager, memory: InMemoryJobStore) -> None:
    calls: list[str] = []
    task = howto_task_decorator(task_manager, calls)

    @task(queue="queue")
    def shout(word: str) -> None:
        calls.append(word.upper())

    @task(queue="queue")
    def whisper(word: str) -> None:
        calls.append(word.lower())

    where = f"{__name__}.test_tasks_made_by_one_wrapper_are_named_after_their_own_functions.<locals>"
    assert (shout.name, whisper.name) == (f"{where}.shout", f"{where}.whisper")
    assert (shout.__name__, whisper.__name__) == ("shout", "whisper")  # type: ignore[attr-defined]
    shout.defer("Cabbage")
    whisper.defer("Cabbage")
    assert cabbage.Worker(task_manager).process_jobs() == 2
    assert calls == ["before", "CABBAGE", "before", "cabbage"]
    with pytest.raises(UnserialisableArgumentError, match=r"^argument 1 of shout is not JSON-serialisable \(set\)"):
        shout.defer({"a"})


def test_a_task_under_functools_wraps_and_the_howto_wrapper_is_named_after_the_users_function(task_manager: cabbage.TaskManager) -> None:
    task = howto_task_decorator(task_manager, [])

    def logged(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def logging_wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return logging_wrapper

    @task()
    @logged
    def clean() -> None: ...

    assert clean.name.endswith(".<locals>.clean") and clean.__name__ == "clean"  # type: ignore[attr-defined]


def test_a_task_of_its_own_that_calls_a_local_function_keeps_its_own_name(task_manager: cabbage.TaskManager) -> None:
    def helper(floor: str) -> str:
        return floor

    @task_manager.task
    def write(floor: str) -> str:  # takes its own arguments: not a wrapper of helper
        return helper(floor)

    @task_manager.task
    def forward(*args: Any, **kwargs: Any) -> Any:  # closes over itself: followed once, no further
        return forward(*args, **kwargs) if args else None

    assert write.name.endswith(".<locals>.write") and forward.name.endswith(".<locals>.forward")


def test_a_wrapper_of_several_functions_needs_a_name(task_manager: cabbage.TaskManager) -> None:
    def before() -> None: ...

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        def new_func(*args: Any, **kwargs: Any) -> Any:
            before()
            return func(*args, **kwargs)

        return new_func

    def send() -> None: ...

    with pytest.raises(ConfigurationError) as raised:
        task_manager.task(wrap(send))
    assert str(raised.value) == (
        "cannot tell which function new_func(*args, **kwargs) wraps, to name the task after it: "
        "it closes over before, send; pass name=, or decorate the wrapper with functools.wraps(...)"
    )
    assert task_manager.tasks == {}
    assert task_manager.task(name="mail.send")(wrap(send)).name == "mail.send"


def test_calling_a_task_runs_the_function_here(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    assert write_alphabet("a") == "wrote a"
    assert write_alphabet.__name__ == "write_alphabet"  # type: ignore[attr-defined]
    assert memory.jobs == ()


def test_retry_as_a_number_of_retries(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task(retry=3)
    def flaky() -> None: ...

    assert flaky.retry_policy.max_attempts == 4


def test_a_duplicate_name_is_refused(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task(name="same")
    def first() -> None: ...

    with pytest.raises(TaskAlreadyRegistered, match="'same' is already declared.*pass name="):

        @task_manager.task(name="same")
        def second() -> None: ...

    assert task_manager.tasks == {"same": first}


def test_an_unknown_task_name_lists_the_known_ones(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager) -> None:
    with pytest.raises(TaskNotFound) as raised:
        task_manager.get_task("x.y")
    assert str(raised.value) == f"task 'x.y' is not declared in this app (known: {write_alphabet.name})"
    assert isinstance(raised.value, LookupError)


@pytest.mark.parametrize("timeout", [0, -1, "10", True, math.inf, math.nan])
def test_a_bad_timeout_is_refused(task_manager: cabbage.TaskManager, timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds > 0"):
        task_manager.task(timeout=timeout)(lambda: None)
    assert task_manager.tasks == {}


@pytest.mark.parametrize("options", [{"queue": ""}, {"queue": 3}, {"lock": 3}, {"retry": -1}])
def test_bad_task_options_are_refused(task_manager: cabbage.TaskManager, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        task_manager.task(**options)(lambda: None)


def test_importing_cabbage_configures_nothing_and_connects_nowhere() -> None:
    # A fresh interpreter: this one has seen other tests configure logging.
    script = (
        "import logging, sys, structlog, cabbage\n"
        "from cabbage import store\n"
        "cabbage.TaskManager(store_class=store.load_store_from_path('cabbage.testing.InMemoryJobStore'))\n"
        "assert not structlog.is_configured(), 'structlog configured'\n"
        "assert not logging.getLogger().handlers, 'a root handler was added'\n"
        "assert 'psycopg2' not in sys.modules, 'psycopg2 imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- deferring -----------------------------------------------------------------------------------


def test_defer_stores_a_job_with_the_tasks_options(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    job_id = write_alphabet.defer("a")
    job = memory.get_job(job_id)
    assert job is not None
    assert (job.task_name, job.queue, job.args, job.kwargs, job.lock) == (write_alphabet.name, "queue", ("a",), {}, None)
    assert (job.status, job.max_attempts) == (Status.TODO, 1)


def test_defer_takes_keyword_arguments(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    job = memory.get_job(write_alphabet.defer(floor={"nested": [1, 2.5, None, True]}))
    assert job is not None and job.args == () and job.kwargs == {"floor": {"nested": [1, 2.5, None, True]}}


def test_max_attempts_comes_from_the_retry_policy(task_manager: cabbage.TaskManager, memory: InMemoryJobStore) -> None:
    @task_manager.task(retry=cabbage.RetryPolicy(max_attempts=5))
    def flaky() -> None: ...

    @task_manager.task(retry=True)
    def forever() -> None: ...

    assert [job.max_attempts for job in map(memory.get_job, [flaky.defer(), forever.defer()])] == [5, None]  # type: ignore[union-attr]


def test_configure_sets_lock_queue_and_keeps_the_rest(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    job_description = write_alphabet.configure(lock="/tmp/alphabet.txt", queue="other")
    ids = [job_description.defer(letter) for letter in "abcd"]
    jobs = [memory.get_job(job_id) for job_id in ids]
    assert [(job.lock, job.queue, job.args) for job in jobs] == [("/tmp/alphabet.txt", "other", (letter,)) for letter in "abcd"]  # type: ignore[union-attr]
    assert memory.get_job(write_alphabet.defer("e")).lock is None  # type: ignore[union-attr]


def test_the_tasks_default_lock_applies_unless_configured(task_manager: cabbage.TaskManager, memory: InMemoryJobStore) -> None:
    @task_manager.task(lock="printer")
    def print_page(page: int) -> None: ...

    assert memory.get_job(print_page.defer(1)).lock == "printer"  # type: ignore[union-attr]
    assert memory.get_job(print_page.configure(lock="other").defer(2)).lock == "other"  # type: ignore[union-attr]


def test_schedule_at_is_kept(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    dt = datetime.datetime(2038, 1, 19, 3, 14, 7).replace(tzinfo=datetime.timezone.utc)
    job = memory.get_job(write_alphabet.configure(schedule_at=dt).defer("z"))
    assert job is not None and job.scheduled_at == dt


def test_schedule_in_counts_from_now(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    before = datetime.datetime.now(UTC)
    job = memory.get_job(write_alphabet.configure(schedule_in={"hours": 1, "minutes": 30}).defer("z"))
    after = datetime.datetime.now(UTC)
    assert job is not None
    assert before + datetime.timedelta(minutes=90) <= job.scheduled_at <= after + datetime.timedelta(minutes=90)


@pytest.mark.parametrize(
    ("schedule_in", "folded"),
    [
        ({"hours": 1, "minutes": 30}, {"seconds": 5400.0}),
        ({"weeks": 1, "days": 1, "seconds": 1, "milliseconds": 500, "microseconds": 250}, {"seconds": 691201.50025}),
        ({"years": 1, "months": 2, "days": 3}, {"years": 1, "months": 2, "seconds": 259200.0}),
        ({"months": 1}, {"months": 1}),
        ({}, {"seconds": 0.0}),
    ],
)
def test_schedule_in_folds_fixed_units_into_seconds(
    write_alphabet: cabbage.Task, schedule_in: dict[str, float], folded: dict[str, float]
) -> None:
    description = write_alphabet.configure(schedule_in=schedule_in)
    assert description.scheduled_at is None
    assert description.schedule_in == pytest.approx(folded)


def test_defer_many_is_one_store_call(
    write_alphabet: cabbage.Task, memory: InMemoryJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = memory.defer_jobs
    def counting_defer_jobs(jobs: Any, connection: Any = None) -> list[int]:
        calls.append(len(jobs))
        return original(jobs, connection)

    monkeypatch.setattr(memory, "defer_jobs", counting_defer_jobs)
    ids = write_alphabet.configure(lock="L").defer_many([["a"], ("b",), {"floor": "c"}])
    assert calls == [3]
    assert [(job.args, job.kwargs, job.lock) for job in memory.jobs] == [(("a",), {}, "L"), (("b",), {}, "L"), ((), {"floor": "c"}, "L")]
    assert [job.id for job in memory.jobs] == ids
    assert write_alphabet.defer_many([]) == []
    assert calls == [3]


def test_defer_many_on_the_task(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    assert len(write_alphabet.defer_many([["a"], ["b"]])) == 2
    assert [job.args for job in memory.jobs] == [("a",), ("b",)]


def test_connection_is_refused_by_the_memory_store(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    with pytest.raises(ConfigurationError, match="cannot join a database transaction"):
        write_alphabet.configure(connection=object()).defer("a")
    assert memory.jobs == ()


# -- bad input: nothing inserted ------------------------------------------------------------------


def nested(depth: int, innermost: Any = "floor") -> Any:
    """``innermost`` inside ``depth`` lists and dicts, alternately."""
    value = innermost
    for level in range(depth):
        value = [value] if level % 2 else {"level": value}
    return value


def holding_itself() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {"floor": {"a"}}, "argument 'floor' of write_alphabet is not JSON-serialisable (set); pass a list"),
        (({"a"},), {}, "argument 1 of write_alphabet is not JSON-serialisable (set); pass a list"),
        (("ok", b"x"), {}, "argument 2 of write_alphabet is not JSON-serialisable (bytes); pass a str"),
        ((datetime.date(2038, 1, 19),), {}, "argument 1 of write_alphabet is not JSON-serialisable (date); pass value.isoformat()"),
        ((decimal.Decimal("1.5"),), {}, "(Decimal); pass str(value) or float(value)"),
        ((uuid.uuid4(),), {}, "(UUID); pass str(value)"),
        ((math.nan,), {}, "argument 1 of write_alphabet is not JSON-serialisable (float nan); pass a finite number"),
        ((), {"floor": [1, {"deep": object()}]}, "argument 'floor' of write_alphabet is not JSON-serialisable (object); pass JSON types"),
        (("a\x00b",), {}, "argument 1 of write_alphabet is not JSON-serialisable (str with a NUL character \\x00); PostgreSQL cannot"),
        ((), {"floor": {"k\x00": 1}}, "argument 'floor' of write_alphabet is not JSON-serialisable (str with a NUL character"),
        ((), {"floor": {(1, 2): "tuple key"}}, "argument 'floor' of write_alphabet is not JSON-serialisable (dict key of type tuple); use str keys"),
        ((), {"floor": {1: "a"}}, "argument 'floor' of write_alphabet is not JSON-serialisable (dict key 1, which JSON would turn into the str '1'); use str keys"),
        (({True: 1},), {}, "argument 1 of write_alphabet is not JSON-serialisable (dict key True, which JSON would turn into the str 'true'); use str keys"),
        (({None: 2},), {}, "(dict key None, which JSON would turn into the str 'null'); use str keys"),
        (({1.5: 2},), {}, "(dict key 1.5, which JSON would turn into the str '1.5'); use str keys"),
        (({1: "a", "1": "b"},), {}, "argument 1 of write_alphabet is not JSON-serialisable (dict key 1, which JSON would"),
        (({"1": "b", 1: "a"},), {}, "argument 1 of write_alphabet is not JSON-serialisable (dict key 1, which JSON would"),
        (("a\ud800b",), {}, "argument 1 of write_alphabet is not JSON-serialisable (str with the surrogate '\\ud800', which UTF-8 cannot encode); fix how"),
        ((), {"floor": ["ok", {"k\udcff": 1}]}, "argument 'floor' of write_alphabet is not JSON-serialisable (str with the surrogate '\\udcff'"),
        (("\ud83d\ude00",), {}, "(str with the surrogate '\\ud83d', which UTF-8 cannot encode)"),  # a pair in UTF-16, two code points here
        ((10**4300,), {}, "argument 1 of write_alphabet is not JSON-serialisable (int of more than 4300 digits); pass str(value)"),
        ((), {"floor": [-(10**5000)]}, "argument 'floor' of write_alphabet is not JSON-serialisable (int of more than 4300 digits)"),
        ((nested(101),), {}, "argument 1 of write_alphabet is not JSON-serialisable (lists and dicts nested more than 100 deep, or one that holds itself); flatten it"),
        ((), {"floor": nested(100, {"deeper": []})}, "argument 'floor' of write_alphabet is not JSON-serialisable (lists and dicts nested more than 100 deep"),
        ((holding_itself(),), {}, "argument 1 of write_alphabet is not JSON-serialisable (lists and dicts nested more than 100 deep, or one that holds itself)"),
    ],
)
def test_an_argument_json_cannot_carry_is_refused(
    write_alphabet: cabbage.Task, memory: InMemoryJobStore, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UnserialisableArgumentError) as raised:
        write_alphabet.defer(*args, **kwargs)
    assert message in str(raised.value)
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, CabbageError)
    assert memory.jobs == ()


def test_what_a_job_can_carry_at_the_limits_comes_back_unchanged(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    largest, smallest = 10**4300 - 1, -(10**4300 - 1)  # 4300 digits, Python's default limit
    deepest = nested(100)
    job = memory.get_job(write_alphabet.defer(largest, smallest, deepest, "é\U0001f600", floor={"": 0}))
    assert job is not None
    assert job.args == (largest, smallest, deepest, "é\U0001f600") and job.kwargs == {"floor": {"": 0}}


def test_subclasses_of_json_types_are_carried_as_their_base_types(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Word(str):
        pass

    job = memory.get_job(write_alphabet.defer(Colour.RED, Word("a"), collections.OrderedDict(b=2)))
    assert job is not None and job.args == (1, "a", {"b": 2})
    with pytest.raises(UnserialisableArgumentError, match=r"argument 2 of write_alphabet is not JSON-serialisable \(str with a NUL"):
        write_alphabet.defer(Colour.RED, Word("a\x00"))


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="Python without an int digit limit (before 3.11)")
def test_a_long_int_is_refused_even_where_this_process_reads_any_length(
    write_alphabet: cabbage.Task, memory: InMemoryJobStore
) -> None:
    # This process may lift its own limit; the worker that reads the job back has the default.
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(UnserialisableArgumentError, match="argument 1 of write_alphabet .*int of more than 4300 digits"):
            write_alphabet.defer(10**5000)
    finally:
        sys.set_int_max_str_digits(previous)
    assert memory.jobs == ()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": "mail\x00"}, "queue 'mail\\x00' contains a NUL character, which PostgreSQL cannot store; remove it"),
        ({"lock": "/tmp/\x00"}, "lock '/tmp/\\x00' contains a NUL character, which PostgreSQL cannot store; remove it"),
        ({"queue": "mail\udcff"}, "queue 'mail\\udcff' contains the surrogate '\\udcff', which UTF-8 cannot encode; remove it"),
        ({"lock": "\ud800"}, "lock '\\ud800' contains the surrogate '\\ud800', which UTF-8 cannot encode; remove it"),
    ],
)
def test_a_queue_or_lock_postgresql_cannot_store_is_refused(
    task_manager: cabbage.TaskManager, write_alphabet: cabbage.Task, memory: InMemoryJobStore, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        write_alphabet.configure(**options)
    assert str(raised.value) == message
    with pytest.raises(ConfigurationError) as raised:
        task_manager.task(**options)(lambda: None)
    assert str(raised.value) == message
    assert memory.jobs == ()


@pytest.mark.parametrize("name", ["tasks.\x00clean", "tasks.\udcffclean"])
def test_a_task_name_postgresql_cannot_store_is_refused_at_declaration(task_manager: cabbage.TaskManager, name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^task name '.*' contains (a NUL character|the surrogate)"):
        task_manager.task(name=name)(lambda: None)
    assert task_manager.tasks == {}


def test_max_arguments_bytes_is_a_task_manager_option_passed_to_its_store() -> None:
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore, max_arguments_bytes=20)

    @task_manager.task(name="tasks.write")
    def write(floor: str) -> None: ...

    write.defer("a" * 14)  # '["aa...a"]{}': 20 bytes
    with pytest.raises(cabbage.ArgumentsTooLargeError) as raised:
        write.defer_many([["b"], ["a" * 15]])
    assert str(raised.value).startswith("arguments of tasks.write are 21 bytes of JSON, over the store's max_arguments_bytes of 20;")
    assert len(task_manager.store.jobs) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("limit", [0, -1, 2**28, 1.5, True, "1MB", None])
def test_max_arguments_bytes_must_be_a_size_jsonb_can_hold(limit: Any) -> None:
    from cabbage.postgres import PostgresJobStore  # constructing it opens nothing

    message = rf"^max_arguments_bytes must be a whole number of bytes from 1 to 268435455 \(jsonb's own limit\), got {re.escape(repr(limit))}$"
    for store_class in (InMemoryJobStore, PostgresJobStore):
        with pytest.raises(ConfigurationError, match=message):
            cabbage.TaskManager(store_class=store_class, max_arguments_bytes=limit)


def test_one_bad_call_in_defer_many_inserts_nothing(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    with pytest.raises(UnserialisableArgumentError, match="argument 1 of write_alphabet"):
        write_alphabet.defer_many([["a"], [{"b"}], ["c"]])
    with pytest.raises(ConfigurationError, match="call 2 of defer_many is a str"):
        write_alphabet.defer_many([["a"], "b"])
    with pytest.raises(ConfigurationError, match="not a str"):
        write_alphabet.defer_many([{1: "a"}])  # type: ignore[dict-item]
    assert memory.jobs == ()


def test_a_naive_schedule_at_is_refused(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    with pytest.raises(ScheduleError) as raised:
        write_alphabet.configure(schedule_at=datetime.datetime(2038, 1, 19, 3, 14, 7)).defer("a")
    assert str(raised.value) == (
        "schedule_at must be timezone-aware, got 2038-01-19 03:14:07 (naive); pass tzinfo=datetime.timezone.utc"
    )
    assert isinstance(raised.value, ValueError)
    assert memory.jobs == ()


def test_schedule_at_must_be_a_datetime(write_alphabet: cabbage.Task) -> None:
    with pytest.raises(ScheduleError, match="must be a datetime.datetime, got datetime.date"):
        write_alphabet.configure(schedule_at=datetime.date(2038, 1, 19))  # type: ignore[arg-type]


def test_schedule_at_and_schedule_in_together_are_refused(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    dt = datetime.datetime(2038, 1, 19, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="pass schedule_at or schedule_in, not both"):
        write_alphabet.configure(schedule_at=dt, schedule_in={"hours": 1}).defer("a")
    assert memory.jobs == ()


@pytest.mark.parametrize(
    ("schedule_in", "message"),
    [
        ({"hour": 1}, "schedule_in unit 'hour' is not one of years, months, weeks, days, hours, minutes, seconds, milliseconds, microseconds"),
        ({"hours": -1}, "schedule_in['hours'] must be a number >= 0, got -1"),
        ({"hours": "1"}, "schedule_in['hours'] must be a number >= 0, got '1'"),
        ({"hours": True}, "must be a number >= 0, got True"),
        ({"minutes": math.inf}, "must be a number >= 0, got inf"),
        ({"months": 1.5}, "schedule_in['months'] must be a whole number, got 1.5"),
        ([("hours", 1)], "schedule_in must be a dict of pendulum duration units"),
    ],
)
def test_a_bad_schedule_in_is_refused(
    write_alphabet: cabbage.Task, memory: InMemoryJobStore, schedule_in: Any, message: str
) -> None:
    with pytest.raises(ScheduleError) as raised:
        write_alphabet.configure(schedule_in=schedule_in).defer("a")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert memory.jobs == ()


def test_schedule_at_at_either_end_of_the_range_is_kept(write_alphabet: cabbage.Task, memory: InMemoryJobStore) -> None:
    earliest = datetime.datetime(1, 1, 2, tzinfo=UTC)
    latest = datetime.datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert (earliest, latest) == (schedules.EARLIEST_SCHEDULED_AT, schedules.LATEST_SCHEDULED_AT)
    ids = [write_alphabet.configure(schedule_at=moment).defer("a") for moment in (earliest, latest)]
    assert [memory.get_job(job_id).scheduled_at for job_id in ids] == [earliest, latest]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "schedule_at",
    [
        datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        datetime.datetime(1, 1, 1, 0, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=14))),
        datetime.datetime.max.replace(tzinfo=UTC),
        datetime.datetime(9999, 12, 31, tzinfo=UTC),
    ],
    ids=["year-10000-in-utc", "year-0-in-utc", "datetime-max", "a-day-from-the-end"],
)
def test_a_schedule_at_outside_the_range_is_refused(
    write_alphabet: cabbage.Task, memory: InMemoryJobStore, schedule_at: datetime.datetime
) -> None:
    with pytest.raises(ScheduleError) as raised:
        write_alphabet.configure(schedule_at=schedule_at).defer("a")
    assert str(raised.value) == (
        f"schedule_at {schedule_at.isoformat()} is outside the times a job can be scheduled at "
        "(from 0001-01-02T00:00:00+00:00 to 9999-12-30T23:59:59.999999+00:00, UTC); pick a time in that range"
    )
    assert isinstance(raised.value, ValueError)
    assert memory.jobs == ()


@pytest.mark.parametrize(
    "schedule_in",
    [{"years": 8000}, {"months": 96000}, {"years": 10**30}, {"weeks": 1e300}, {"days": 3_000_000}, {"seconds": 1e18}],
)
def test_a_schedule_in_ending_outside_the_range_is_refused(
    write_alphabet: cabbage.Task, memory: InMemoryJobStore, schedule_in: dict[str, float]
) -> None:
    with pytest.raises(ScheduleError, match=r"^schedule_in=.* from \S+ ends after 9999-12-30T23:59:59.999999\+00:00, "
                       "the latest a job can be scheduled at; pass a shorter delay$"):
        write_alphabet.configure(schedule_in=schedule_in).defer("a")
    assert memory.jobs == ()


def test_a_description_kept_until_its_delay_ends_past_the_range_is_refused_at_defer() -> None:
    # The store counts schedule_in from its own clock at each defer: a description configured
    # in time can still be refused later, by the store, and then inserts nothing.
    clock = ManualClock()
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore, clock=clock)

    @task_manager.task
    def clean() -> None: ...

    description = clean.configure(schedule_in={"years": 9998 - clock.now.year})
    assert task_manager.store.get_job(description.defer()).scheduled_at.year == 9998  # type: ignore[union-attr]
    clock.advance(2 * 366 * 86400)
    with pytest.raises(ScheduleError, match="ends after 9999-12-30"):
        description.defer()
    assert len(task_manager.store.jobs) == 1  # type: ignore[attr-defined]


def test_a_bad_lock_or_queue_in_configure_is_refused(write_alphabet: cabbage.Task) -> None:
    with pytest.raises(ConfigurationError, match=r"lock must be a string naming the shared resource, got 3 \(int\)"):
        write_alphabet.configure(lock=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="queue must be a non-empty string"):
        write_alphabet.configure(queue="")


def test_defer_logs_job_deferred_at_debug(write_alphabet: cabbage.Task) -> None:
    saved = structlog.get_config()
    capture = structlog.testing.LogCapture()
    # Its own configuration: an earlier test may have left a filter at info in place.
    structlog.configure(processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        job_id = write_alphabet.defer("a")
        write_alphabet.defer_many([["b"], ["c"]])
    finally:
        structlog.configure(**saved)
    events = capture.entries
    assert events == [
        {"event": "job_deferred", "log_level": "debug", "job_id": job_id, "task_name": write_alphabet.name, "queue": "queue", "lock": None},
        {"event": "jobs_deferred", "log_level": "debug", "job_count": 2, "task_name": write_alphabet.name, "queue": "queue", "lock": None},
    ]


def test_defer_prints_nothing_where_structlog_was_never_configured(
    write_alphabet: cabbage.Task, capsys: pytest.CaptureFixture[str]
) -> None:
    # Unconfigured, structlog prints every level on stdout: a web app's defers would each
    # print a debug line into the app's own output.
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        assert not structlog.is_configured()
        write_alphabet.defer("a")
        write_alphabet.defer_many([["b"], ["c"]])
    finally:
        structlog.configure(**saved)
    assert capsys.readouterr().out == ""
