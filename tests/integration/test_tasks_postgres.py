"""The task API on PostgreSQL: refused arguments are named and insert nothing, a deferral joins
the caller's transaction, and calendar delays count on the database clock."""

from __future__ import annotations

import contextlib
import datetime
from typing import Iterator

import psycopg2
import pytest
from psycopg2.extensions import make_dsn

import cabbage
from cabbage import schedules
from cabbage.admin import Admin, JobFilter
from cabbage.exceptions import UnserialisableArgumentError
from cabbage.jobs import Status


@pytest.fixture
def task_manager(db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[cabbage.TaskManager]:
    monkeypatch.setenv("CABBAGE_DSN", db_dsn)
    task_manager = cabbage.TaskManager()
    yield task_manager
    task_manager.store.close()


@pytest.fixture
def write_alphabet(task_manager: cabbage.TaskManager) -> cabbage.Task:
    @task_manager.task(queue="queue")
    def write_alphabet(floor: object) -> None: ...

    return write_alphabet


def total_jobs(task_manager: cabbage.TaskManager) -> int:
    return sum(task_manager.store.count_jobs().values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (({"a"},), "argument 1 of write_alphabet is not JSON-serialisable (set); pass a list"),
        ((float("nan"),), "argument 1 of write_alphabet is not JSON-serialisable (float nan)"),
        (("a\x00",), "argument 1 of write_alphabet is not JSON-serialisable (str with a NUL character"),
    ],
)
def test_refused_arguments_are_named_and_insert_nothing(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(UnserialisableArgumentError) as raised:
        write_alphabet.configure(lock="L").defer_many([["ok"], args])
    assert message in str(raised.value)
    assert total_jobs(task_manager) == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (({"a"},), {}, "argument 1 of write_alphabet is not JSON-serialisable (set); pass a list"),
        ((), {"floor": float("inf")}, "argument 'floor' of write_alphabet is not JSON-serialisable (float inf)"),
    ],
)
def test_a_single_defer_names_the_refused_argument_and_inserts_nothing(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(UnserialisableArgumentError) as raised:
        write_alphabet.defer(*args, **kwargs)
    assert message in str(raised.value)
    assert total_jobs(task_manager) == 0


def test_a_single_defer_stores_its_arguments_and_options(write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager) -> None:
    without_arguments = task_manager.store.get_job(write_alphabet.configure(lock="L").defer())
    with_arguments = task_manager.store.get_job(write_alphabet.defer("a", floor={"b": [1, None]}))
    assert without_arguments is not None and with_arguments is not None
    assert (without_arguments.args, without_arguments.kwargs, without_arguments.lock) == ((), {}, "L")
    assert (with_arguments.args, with_arguments.kwargs, with_arguments.lock) == (("a",), {"floor": {"b": [1, None]}}, None)


def test_a_deferral_commits_or_rolls_back_with_the_callers_transaction(
    db_dsn: str, write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager
) -> None:
    with contextlib.closing(psycopg2.connect(db_dsn)) as connection:
        rolled_back = write_alphabet.configure(connection=connection).defer("a")
        connection.rollback()
        committed = write_alphabet.configure(connection=connection).defer_many([["b"], ["c"]])
        assert task_manager.store.get_job(committed[0]) is None  # not visible before the commit
        connection.commit()
    assert task_manager.store.get_job(rolled_back) is None
    assert [task_manager.store.get_job(job_id).status for job_id in committed] == [Status.TODO, Status.TODO]  # type: ignore[union-attr]


def test_defer_many_takes_lists_tuples_and_dicts_with_the_descriptions_options(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager
) -> None:
    job_ids = write_alphabet.configure(lock="L", queue="mail").defer_many([["a"], ("b",), {"floor": "c"}, []])
    jobs = [task_manager.store.get_job(job_id) for job_id in job_ids]
    assert [(job.args, job.kwargs) for job in jobs if job is not None] == [(("a",), {}), (("b",), {}), ((), {"floor": "c"}), ((), {})]
    assert {(job.queue, job.lock, job.task_name) for job in jobs if job is not None} == {("mail", "L", write_alphabet.name)}
    assert sorted(job_ids) == job_ids


def test_schedule_in_with_calendar_units_uses_the_database_clock(
    write_alphabet: cabbage.Task, task_manager: cabbage.TaskManager
) -> None:
    job = task_manager.store.get_job(write_alphabet.configure(schedule_in={"months": 1, "days": 1}).defer("a"))
    assert job is not None
    later = job.scheduled_at - job.created_at
    assert datetime.timedelta(days=29) <= later <= datetime.timedelta(days=32)
    assert cabbage.Worker(task_manager).process_jobs() == 0


@pytest.mark.parametrize("time_zone", ["Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kathmandu"])
def test_the_ends_of_the_schedule_range_read_back_in_any_session_time_zone(db_dsn: str, time_zone: str) -> None:
    # psycopg2 reads a timestamptz in the session's time zone: 9999-12-31T23:00Z in Kiritimati
    # (+14) would be in year 10000 and could not be read, by a worker, `cabbage jobs list` or /jobs.
    dsn = make_dsn(db_dsn, options=f"-c TimeZone={time_zone}")
    task_manager = cabbage.TaskManager(dsn=dsn)
    ran: list[str] = []

    @task_manager.task
    def write_alphabet(floor: str) -> None:
        ran.append(floor)

    moments = (schedules.EARLIEST_SCHEDULED_AT, schedules.LATEST_SCHEDULED_AT)
    ids = [write_alphabet.configure(schedule_at=moment).defer(floor) for moment, floor in zip(moments, "az")]
    try:
        assert cabbage.Worker(task_manager).process_jobs() == 1
        assert [task_manager.store.get_job(job_id).scheduled_at for job_id in ids] == list(moments)  # type: ignore[union-attr]
    finally:
        task_manager.store.close()
    assert ran == ["a"]
    admin = Admin.connect(dsn)
    try:
        assert sorted(job.id for job in admin.list_jobs(JobFilter()).jobs) == ids
        assert admin.get_job(ids[1]).scheduled_at == schedules.LATEST_SCHEDULED_AT
    finally:
        admin.close()
