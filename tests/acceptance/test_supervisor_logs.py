"""Every line is JSON with timestamp, level and event; a DSN's password shows nowhere."""
from __future__ import annotations

import secrets
import signal
from typing import Callable

from psycopg2.extensions import make_dsn

from cabbage.jobs import Status
from supervisor import exit_codes
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, title_of
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]

TASKS = """
import logging

import structlog


@task_manager.task
def chatty():
    # The user's own lines, by structlog and by logging, DSN included: scrubbed on the way out.
    structlog.get_logger().info("task_said", dsn=os.environ["CABBAGE_DSN"])
    logging.getLogger("user.code").warning("connecting to %s", os.environ["CABBAGE_DSN"])
    record("chatted")


@task_manager.task
def broken():
    raise RuntimeError(f"cannot reach {os.environ['CABBAGE_DSN']}")


@task_manager.task
def sleepy():
    record("sleeping")
    time.sleep(60)
"""


def test_every_line_is_json_and_no_password_shows(start_supervisor: Start, jobs: Jobs, db_dsn: str) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    dsn = make_dsn(db_dsn, password=password)  # the test server trusts: the password is sent, not checked
    supervisor = start_supervisor(TASKS, "--dsn", dsn, "--graceful-timeout", "1", dsn="")
    children = supervisor.wait_for_children(2)
    wait_for(lambda: title_of(supervisor.pid).startswith("cabbage-supervisor: master"), 5, "the master's title")
    titles = supervisor.titles()
    assert set(titles) == {supervisor.pid, *children}
    assert not [title for title in titles.values() if password in title]

    chatty, broken = jobs.defer("chatty"), jobs.defer("broken")
    jobs.defer("sleepy")
    supervisor.wait_for_task_event("sleeping")
    wait_for(lambda: jobs.status(chatty) is Status.SUCCEEDED and jobs.status(broken) is Status.FAILED, 10, "both jobs")
    supervisor.send(signal.SIGTERM)  # the sleeping job is killed after 1 s: a worker_killed line
    assert supervisor.wait_exit(10) == exit_codes.EXIT_OK

    events = {line["event"] for line in supervisor.logs}
    assert {"task_said", "job_failed", "worker_killed", "jobs_reclaimed", "supervisor_stopped"} <= events
    assert any("logger" in line and line.get("event", "").startswith("connecting to ") for line in supervisor.logs)
    assert supervisor.unparsed == [] and supervisor.stderr == []
    for line in supervisor.logs:
        assert {"timestamp", "level", "event", "pid"} <= set(line), line
        assert line["timestamp"].endswith("Z")
    everything = "".join(str(line) for line in supervisor.logs)
    assert password not in everything
    assert "password=***" in everything  # the DSN was there, redacted


def test_a_password_stays_hidden_when_the_database_cannot_be_reached(start_supervisor: Start) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    supervisor = start_supervisor(TASKS, dsn=f"postgresql://app:{password}@127.0.0.1:1/nowhere?connect_timeout=2")
    assert supervisor.wait_exit(15) == exit_codes.EXIT_DATABASE
    failure = supervisor.wait_for_event("database_unreachable")
    assert failure["level"] == "critical"
    assert failure["error"].startswith("cannot connect to postgresql://app:***@127.0.0.1:1/nowhere")
    assert password not in "".join(str(line) for line in supervisor.logs) + "".join(supervisor.stderr + supervisor.unparsed)


def test_a_database_without_the_schema_is_named_with_its_fix(start_supervisor: Start, pg_dsn: str) -> None:
    from devdb.databases import create_database, drop_database

    name = f"cabbage_empty_{secrets.token_hex(4)}"
    create_database(pg_dsn, name)
    try:
        supervisor = start_supervisor(TASKS, dsn=make_dsn(pg_dsn, dbname=name))
        assert supervisor.wait_exit(15) == exit_codes.EXIT_SCHEMA
        failure = supervisor.wait_for_event("schema_outdated")
        assert failure["level"] == "critical"
        assert failure["error"].endswith("run 'cabbage schema apply'")
    finally:
        drop_database(pg_dsn, name)
