"""Signal intake in this process: handlers only record, wait() wakes, blocked() holds signals back."""
from __future__ import annotations

import os
import signal
from typing import Iterator

import pytest

from supervisor.signals import HANDLED_SIGNALS, SignalIntake, blocked, name_of


@pytest.fixture
def intake() -> Iterator[SignalIntake]:
    previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    intake = SignalIntake()
    intake.install()
    yield intake
    signal.set_wakeup_fd(-1)
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    os.close(intake.read_fd)
    os.close(intake.write_fd)


def test_a_signal_wakes_the_wait_and_is_drained_once(intake: SignalIntake) -> None:
    os.kill(os.getpid(), signal.SIGHUP)
    intake.wait(timeout_s=3600)  # returns only because the signal woke it
    assert intake.drain() == [signal.SIGHUP]
    assert intake.drain() == []


def test_signals_are_drained_in_arrival_order(intake: SignalIntake) -> None:
    for signum in (signal.SIGTTIN, signal.SIGTTIN, signal.SIGTERM):
        os.kill(os.getpid(), signum)
    intake.wait(timeout_s=10)
    assert intake.drain() == [signal.SIGTTIN, signal.SIGTTIN, signal.SIGTERM]


def test_wait_times_out_when_nothing_arrives(intake: SignalIntake) -> None:
    intake.wait(timeout_s=0.05)
    assert intake.drain() == []


def test_a_blocked_signal_waits_until_the_block_ends(intake: SignalIntake) -> None:
    with blocked():
        os.kill(os.getpid(), signal.SIGTTOU)
        assert intake.drain() == []
    intake.wait(timeout_s=10)
    assert intake.drain() == [signal.SIGTTOU]


def test_signal_names() -> None:
    assert name_of(signal.SIGKILL) == "SIGKILL"
    assert name_of(200) == "200"
