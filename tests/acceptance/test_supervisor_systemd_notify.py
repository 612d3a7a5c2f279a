"""The notify protocol as systemd sees it: a real datagram socket the test listens on."""
from __future__ import annotations

import secrets
import signal
import socket
import time
from typing import Callable, Iterator

import pytest

from supervisor import exit_codes
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, title_of

Start = Callable[..., SupervisorProcess]

TASKS = """
@task_manager.task
def nothing():
    pass
"""


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """An abstract socket (NOTIFY_SOCKET=@name), as systemd passes it to some services."""
    name = f"cabbage-notify-{secrets.token_hex(6)}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    yield server, "@" + name
    server.close()


def next_message(server: socket.socket, wanted: str, timeout_s: float = 10) -> dict[str, str]:
    """The next datagram that carries ``wanted`` (e.g. READY=1), as a dict of its assignments."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        server.settimeout(remaining)
        try:
            datagram = server.recv(4096).decode()
        except socket.timeout:
            break
        assignments = dict(line.split("=", 1) for line in datagram.split("\n") if line)
        key, _, value = wanted.partition("=")
        if assignments.get(key) == value:
            return assignments
    raise AssertionError(f"no {wanted} within {timeout_s} s")


def test_ready_watchdog_reloading_and_stopping(
    start_supervisor: Start, notify_socket: tuple[socket.socket, str], jobs: Jobs
) -> None:
    server, address = notify_socket
    supervisor = start_supervisor(TASKS, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
    ready = next_message(server, "READY=1")
    assert ready["STATUS"] == "2 of 2 workers running"
    assert len(supervisor.children()) == 2
    # READY once the children registered their workers: they take jobs from then on.
    assert len(jobs.store.list_workers()) == 2
    assert title_of(supervisor.pid).endswith("(2 workers)")
    next_message(server, "WATCHDOG=1", timeout_s=2)
    next_message(server, "WATCHDOG=1", timeout_s=2)  # again, every half period

    supervisor.send(signal.SIGHUP)
    reloading = next_message(server, "RELOADING=1")
    assert abs(int(reloading["MONOTONIC_USEC"]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 10_000_000
    assert next_message(server, "READY=1")["STATUS"].endswith("workers running")

    supervisor.send(signal.SIGTERM)
    assert next_message(server, "STOPPING=1")["STATUS"].startswith("stopping: ")
    assert supervisor.wait_exit(15) == exit_codes.EXIT_OK
