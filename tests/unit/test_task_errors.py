"""A task's exception is recorded whatever it does when shown: the job fails (or retries) with
the task's exception type, and the worker goes on with the next job (issue: an exception that
cannot be shown must not crash the worker)."""
from __future__ import annotations

from typing import Any

import pytest

import cabbage
from cabbage.jobs import Status
from cabbage.task_errors import MAX_MESSAGE_CHARS, bounded, describe_exception
from cabbage.testing import InMemoryJobStore


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class BrokenStrAndRepr(BrokenStr):
    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


class BrokenMessageProperty(Exception):
    @property
    def args(self) -> Any:  # type: ignore[override]
        raise AttributeError("no args today")

    def __str__(self) -> str:
        return self.args[0]


class StrRaisesSystemExit(Exception):
    def __str__(self) -> str:
        raise SystemExit("from __str__")


def cyclic() -> Exception:
    first, second = ValueError("first"), ValueError("second")
    first.__cause__, second.__cause__ = second, first
    return first


@pytest.fixture
def task_manager() -> cabbage.TaskManager:
    return cabbage.TaskManager(store_class=InMemoryJobStore)


@pytest.mark.parametrize(
    ("make_error", "type_name", "message_holds"),
    [
        (lambda: BrokenStr("x"), f"{__name__}.BrokenStr", "BrokenStr('x')"),
        (lambda: BrokenStrAndRepr("x"), f"{__name__}.BrokenStrAndRepr", "could not be rendered"),
        (lambda: BrokenMessageProperty("x"), f"{__name__}.BrokenMessageProperty", "BrokenMessageProperty("),
        (lambda: StrRaisesSystemExit(), f"{__name__}.StrRaisesSystemExit", "StrRaisesSystemExit()"),
        (cyclic, "ValueError", "first"),
    ],
    ids=["str-raises", "str-and-repr-raise", "message-property-raises", "str-raises-system-exit", "cyclic-cause"],
)
def test_an_exception_that_cannot_be_shown_fails_its_job_and_the_worker_goes_on(
    task_manager: cabbage.TaskManager, make_error: Any, type_name: str, message_holds: str
) -> None:
    ran: list[str] = []

    @task_manager.task(retry=1)
    def fragile() -> None:
        raise make_error()

    @task_manager.task
    def next_one() -> None:
        ran.append("next")

    job_id = fragile.defer()
    next_one.defer()
    worker = cabbage.Worker(task_manager)
    assert worker.process_jobs() == 3  # two attempts of fragile, then the next job
    job = task_manager.store.get_job(job_id)
    assert job is not None and (job.status, job.attempts) == (Status.FAILED, 2)
    assert job.last_error is not None and job.last_error.type == type_name
    assert message_holds in job.last_error.message
    assert job.last_error.traceback and "raise make_error()" in job.last_error.traceback
    assert ran == ["next"]


def test_a_megabyte_message_is_stored_cut_with_a_marker(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task
    def verbose() -> None:
        raise ValueError("x" * 1_000_000)

    job_id = verbose.defer()
    cabbage.Worker(task_manager).process_jobs()
    error = task_manager.store.get_job(job_id).last_error  # type: ignore[union-attr]
    assert error is not None and error.type == "ValueError"
    assert error.message.startswith("x" * MAX_MESSAGE_CHARS)
    assert error.message.endswith(f"… [cut: {1_000_000 - MAX_MESSAGE_CHARS} more characters, 1000000 in all]")
    assert error.traceback is not None and len(error.traceback) < 300_000


def test_a_password_in_a_tasks_error_is_not_stored(task_manager: cabbage.TaskManager) -> None:
    @task_manager.task
    def connect_elsewhere() -> None:
        raise ConnectionError("could not reach postgresql://app:S3cr3t-pw@db:5432/app (password=S3cr3t-pw)")

    job_id = connect_elsewhere.defer()
    cabbage.Worker(task_manager).process_jobs()
    error = task_manager.store.get_job(job_id).last_error  # type: ignore[union-attr]
    assert error is not None
    assert "S3cr3t-pw" not in error.message and "S3cr3t-pw" not in (error.traceback or "")
    assert "postgresql://app:***@db:5432/app" in error.message


def test_bounded_keeps_short_text_whole() -> None:
    assert bounded("short", 10) == "short"
    assert bounded("0123456789abc", 10) == "0123456789… [cut: 3 more characters, 13 in all]"


def test_describe_exception_never_raises_even_when_formatting_fails() -> None:
    error = describe_exception(BrokenStrAndRepr())
    assert error.type == f"{__name__}.BrokenStrAndRepr"
    assert isinstance(error.message, str) and isinstance(error.traceback, str)
