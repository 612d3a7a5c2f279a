"""The acceptance layer: cabbage-supervisor as a real process, on a tasks module written into tmp_path.

`start_supervisor(tasks_source, *options)` writes `acceptance_tasks.py` (TASKS_PREAMBLE + the
source) into tmp_path, starts `cabbage-supervisor --app acceptance_tasks --log-format json` in
its own session with CABBAGE_DSN set, and collects its stdout lines as parsed JSON. Tasks call
`record(event, **fields)` to append a JSON line to the events file. At teardown the whole
session is killed, so no process of a test outlives it.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from tests.acceptance.supervisor_process import (
    DEFAULT_OPTIONS,
    SUPERVISOR,
    TASKS_MODULE,
    TASKS_PREAMBLE,
    Jobs,
    SupervisorProcess,
    session_members,
)
from tests.waiting import wait_for


@pytest.fixture
def write_tasks(tmp_path: Path) -> Callable[[str], Path]:
    """Writes (or rewrites) the tasks module: the preamble, then the given source."""

    def write(source: str) -> Path:
        path = tmp_path / f"{TASKS_MODULE}.py"
        path.write_text(TASKS_PREAMBLE + textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def start_supervisor(db_dsn: str, tmp_path: Path, write_tasks: Callable[[str], Path]) -> Iterator[Callable[..., SupervisorProcess]]:
    """Starts cabbage-supervisor on a tasks module; every one started is killed with its session."""
    started: list[SupervisorProcess] = []

    def start(
        tasks_source: str | None,
        *options: str,
        dsn: str | None = None,
        env: dict[str, str] | None = None,
        app: str = TASKS_MODULE,
        defaults: Sequence[str] = DEFAULT_OPTIONS,
        wrapper: Sequence[str] = (),
    ) -> SupervisorProcess:
        if tasks_source is not None:
            write_tasks(tasks_source)
        environ = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
            "CABBAGE_DSN": db_dsn if dsn is None else dsn,
            "CABBAGE_TEST_EVENTS": str(tmp_path / "events.jsonl"),
            "PYTHONDONTWRITEBYTECODE": "1",  # a rewritten module is never shadowed by its .pyc
            **(env or {}),
        }
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            if env is None or name not in env:
                environ.pop(name, None)
        # wrapper: a command that runs the supervisor elsewhere (ip netns exec NAME), exec'ing it.
        command = [*wrapper, str(SUPERVISOR), "--app", app, "--log-format", "json", *defaults, *options]
        process = subprocess.Popen(
            command, env=environ, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        supervisor = SupervisorProcess(process, tmp_path / "events.jsonl")
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.kill_session()
    for supervisor in started:
        wait_for(lambda: not session_members(supervisor.pid), 10, "every process of the supervisor's session to exit")


@pytest.fixture
def jobs(db_dsn: str) -> Iterator[Jobs]:
    client = Jobs(db_dsn)
    yield client
    client.close()
