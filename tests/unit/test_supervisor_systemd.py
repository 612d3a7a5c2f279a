"""The sd_notify client against a real datagram socket the test listens on (path and abstract)."""
from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from supervisor.systemd import SystemdNotifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    server.bind(path)
    server.settimeout(2)
    yield server, path
    server.close()


def received(server: socket.socket) -> list[str]:
    return server.recv(4096).decode().split("\n")


def test_ready_status_stopping_and_watchdog_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    server, path = listener
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path})
    assert notifier.is_enabled
    assert notifier.ready("4 of 4 workers running")
    assert received(server) == ["READY=1", "STATUS=4 of 4 workers running"]
    assert notifier.status("3 of 4 workers running")
    assert received(server) == ["STATUS=3 of 4 workers running"]
    assert notifier.watchdog()
    assert received(server) == ["WATCHDOG=1"]
    assert notifier.stopping("stopping: 4 workers left")
    assert received(server) == ["STOPPING=1", "STATUS=stopping: 4 workers left"]
    notifier.close()


def test_an_unchanged_status_is_not_sent_again(listener: tuple[socket.socket, str]) -> None:
    server, path = listener
    notifier = SystemdNotifier(path)
    assert notifier.status("2 of 2 workers running")
    assert not notifier.status("2 of 2 workers running")
    assert notifier.watchdog()
    assert received(server) == ["STATUS=2 of 2 workers running"]
    assert received(server) == ["WATCHDOG=1"]


def test_reloading_carries_the_monotonic_clock(listener: tuple[socket.socket, str]) -> None:
    server, path = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert SystemdNotifier(path).reloading()
    reloading, monotonic = received(server)
    assert reloading == "RELOADING=1"
    key, _, value = monotonic.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"cabbage-test-{secrets.token_hex(6)}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    try:
        assert SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name}).ready("1 of 1 workers running")
        assert received(server) == ["READY=1", "STATUS=1 of 1 workers running"]
    finally:
        server.close()


def test_a_newline_in_a_status_cannot_forge_another_assignment(listener: tuple[socket.socket, str]) -> None:
    server, path = listener
    assert SystemdNotifier(path).status("oops\nREADY=1")
    assert received(server) == ["STATUS=oops READY=1"]


def test_the_watchdog_period_is_halved_and_only_for_this_process() -> None:
    assert SystemdNotifier.from_environment({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_environment(mine).watchdog_interval_s == 1.0
    another = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier.from_environment(another).watchdog_interval_s is None
    assert SystemdNotifier.from_environment({"WATCHDOG_USEC": "soon"}).watchdog_interval_s is None


def test_the_variables_are_removed_so_children_never_speak_for_the_service(tmp_path: Path) -> None:
    environ = {"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1", "HOME": "/root"}
    SystemdNotifier.from_environment(environ)
    assert environ == {"HOME": "/root"}


def test_outside_systemd_every_call_does_nothing() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.is_enabled
    assert not notifier.ready("1 of 1 workers running")
    assert not notifier.watchdog()


def test_a_socket_that_went_away_is_not_an_error(tmp_path: Path) -> None:
    assert not SystemdNotifier(str(tmp_path / "nobody-listens.sock")).ready("1 of 1 workers running")
