"""The log configuration of the entry points: JSON line shape, one chain for structlog and stdlib
logging, exceptions as data without locals, and passwords that never reach a line."""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import re
import sys
import threading
import warnings
from typing import Any, Callable, Iterator

import pytest
import structlog

from cabbage import logconfig
from cabbage.exceptions import ConfigurationError

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
DSN = "postgresql://app:s3cret-pw@db:5432/app"
# Passed through a name, so that the source lines a console traceback quotes do not show it.
LOCAL_SECRET = "hunter2"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide state: give every test the state it found."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_hooks = sys.excepthook, threading.excepthook
    try:
        yield
    finally:
        logging.captureWarnings(False)
        sys.excepthook, threading.excepthook = saved_hooks
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)
        structlog.contextvars.clear_contextvars()


@pytest.fixture
def lines() -> Callable[..., list[dict[str, Any]]]:
    """Configures JSON logging into a buffer; returns a function giving the lines so far, parsed."""
    buffer = io.StringIO()

    def parsed(**options: Any) -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines()]

    logconfig.configure("json", "info", stream=buffer)
    return parsed


def test_a_json_line_has_timestamp_level_event_pid_first(lines: Callable[..., list[dict[str, Any]]]) -> None:
    structlog.get_logger().info("job_started", job_id=1042)
    [line] = lines()
    assert list(line)[:4] == ["timestamp", "level", "event", "pid"]
    assert (line["level"], line["event"], line["pid"], line["job_id"]) == ("info", "job_started", os.getpid(), 1042)
    assert TIMESTAMP.fullmatch(line["timestamp"])
    logged_at = datetime.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.timezone.utc) - logged_at).total_seconds()) < 60


def test_bound_context_is_on_every_line_until_cleared(lines: Callable[..., list[dict[str, Any]]]) -> None:
    logconfig.bind_worker_context(role="worker", worker_number=3)
    structlog.get_logger().info("worker_started")
    logging.getLogger("user.code").info("from stdlib")
    logconfig.clear_context()
    structlog.get_logger().info("worker_exited")
    first, second, third = lines()
    assert (first["role"], first["worker_number"]) == ("worker", 3)
    assert (second["role"], second["worker_number"]) == ("worker", 3)
    assert "role" not in third


def test_the_level_filters_both_structlog_and_stdlib(lines: Callable[..., list[dict[str, Any]]]) -> None:
    structlog.get_logger().debug("job_deferred")
    logging.getLogger("lib").debug("chatter")
    structlog.get_logger().warning("job_retry_scheduled")
    assert [line["event"] for line in lines()] == ["job_retry_scheduled"]


def test_stdlib_records_go_through_the_same_chain(lines: Callable[..., list[dict[str, Any]]]) -> None:
    logging.getLogger("urllib3.connectionpool").warning("retrying %s (%d)", "host", 2)
    [line] = lines()
    assert list(line)[:4] == ["timestamp", "level", "event", "pid"]
    assert (line["level"], line["event"], line["logger"]) == ("warning", "retrying host (2)", "urllib3.connectionpool")
    assert TIMESTAMP.fullmatch(line["timestamp"])


def test_configuring_twice_does_not_double_lines() -> None:
    buffer = io.StringIO()
    logconfig.configure("json", "info", stream=buffer)
    logconfig.configure("json", "info", stream=buffer)
    logging.getLogger("lib").warning("once")
    structlog.get_logger().info("job_started")
    assert len(buffer.getvalue().splitlines()) == 2


def _connect(password: str) -> None:
    secret_local = f"{password}-local"  # a local variable that must not be rendered
    raise ConnectionError(f"cannot connect to {DSN}: {len(secret_local)}")


def test_an_exception_is_structured_data_without_locals(lines: Callable[..., list[dict[str, Any]]]) -> None:
    try:
        _connect(LOCAL_SECRET)
    except ConnectionError:
        structlog.get_logger().exception("job_failed", error_type="ConnectionError")
    [line] = lines()
    [exception] = line["exception"]
    assert exception["exc_type"] == "ConnectionError"
    assert exception["exc_value"] == "cannot connect to postgresql://app:***@db:5432/app: 13"
    assert [frame["name"] for frame in exception["frames"]][-1] == "_connect"
    assert all("locals" not in frame for frame in exception["frames"])
    assert "hunter2" not in json.dumps(line)
    assert line["level"] == "error"


def test_a_stdlib_exception_is_structured_too(lines: Callable[..., list[dict[str, Any]]]) -> None:
    try:
        _connect(LOCAL_SECRET)
    except ConnectionError:
        logging.getLogger("lib").exception("lost the database")
    [line] = lines()
    assert line["exception"][0]["exc_type"] == "ConnectionError"
    assert "s3cret-pw" not in json.dumps(line) and "hunter2" not in json.dumps(line)


class Connection:
    def __repr__(self) -> str:
        return "<Connection dsn='host=db password=s3cret-pw'>"


def test_a_dsn_password_in_a_field_never_appears(lines: Callable[..., list[dict[str, Any]]]) -> None:
    log = structlog.get_logger()
    log.info("database_unreachable", dsn=DSN, nested={"tries": [f"connecting to {DSN}"]}, connection=Connection())
    logging.getLogger("psycopg2").error("could not connect: password=s3cret-pw host=db")
    logging.getLogger("lib").warning("dsn: %s", DSN)
    text = json.dumps(lines())
    assert "s3cret-pw" not in text
    first = lines()[0]
    assert first["dsn"] == "postgresql://app:***@db:5432/app"
    assert first["nested"] == {"tries": ["connecting to postgresql://app:***@db:5432/app"]}


def test_uncaught_exceptions_are_logged_as_json(lines: Callable[..., list[dict[str, Any]]]) -> None:
    try:
        _connect(LOCAL_SECRET)
    except ConnectionError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    thread = threading.Thread(target=_connect, args=(LOCAL_SECRET,), name="heartbeat")
    thread.start()
    thread.join()
    main_line, thread_line = lines()
    assert (main_line["event"], main_line["level"], main_line["thread"]) == ("exception_uncaught", "critical", "MainThread")
    assert (thread_line["event"], thread_line["level"], thread_line["thread"]) == ("exception_uncaught", "error", "heartbeat")
    assert thread_line["exception"][0]["exc_type"] == "ConnectionError"
    assert "s3cret-pw" not in json.dumps(lines())


def test_warnings_go_through_the_chain(lines: Callable[..., list[dict[str, Any]]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)  # catch_warnings() put back the original showwarning
        warnings.warn("old API", DeprecationWarning)
    [line] = lines()
    assert (line["level"], line["logger"]) == ("warning", "py.warnings")
    assert "DeprecationWarning: old API" in line["event"]


def test_console_lines_are_readable_and_scrubbed() -> None:
    buffer = io.StringIO()
    logconfig.configure("console", "info", stream=buffer)
    try:
        _connect(LOCAL_SECRET)
    except ConnectionError:
        structlog.get_logger().exception("job_failed", dsn=DSN)
    text = buffer.getvalue()
    assert "job_failed" in text and "Traceback" in text and "ConnectionError" in text
    assert not text.startswith("{")
    assert "s3cret-pw" not in text and "hunter2" not in text


def test_auto_is_json_off_a_terminal() -> None:
    buffer = io.StringIO()
    logconfig.configure("auto", "info", stream=buffer)
    structlog.get_logger().info("job_started")
    assert json.loads(buffer.getvalue())["event"] == "job_started"


@pytest.mark.parametrize(("options", "message"), [
    ({"log_format": "xml"}, "log format must be one of auto, json, console, got 'xml'"),
    ({"level": "loud"}, "log level must be one of debug, info, warning, error, critical, got 'loud'"),
])
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        logconfig.configure(**options)
    assert str(raised.value) == message
