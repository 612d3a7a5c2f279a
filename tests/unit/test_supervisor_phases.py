"""The master's signal table as a pure function: what each signal means in each phase."""
from __future__ import annotations

import signal

import pytest

from supervisor.phases import MIN_WORKERS, Intent, Phase, SignalDecision, decide_signal


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_term_or_int_while_running_stops_gracefully(signum: int) -> None:
    assert decide_signal(signum, Phase.RUNNING, 4) == SignalDecision(Intent.STOP_GRACEFULLY, 4, "graceful stop")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_term_or_int_stops_now(signum: int) -> None:
    assert decide_signal(signum, Phase.STOPPING, 4) == SignalDecision(Intent.STOP_NOW, 4, "fast stop")


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.RELOADING, Phase.STOPPING])
def test_quit_stops_now_from_any_phase_but_stopping_now(phase: Phase) -> None:
    assert decide_signal(signal.SIGQUIT, phase, 2).intent is Intent.STOP_NOW


@pytest.mark.parametrize("signum", [signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN])
def test_nothing_more_happens_once_stopping_now(signum: int) -> None:
    decision = decide_signal(signum, Phase.STOPPING_NOW, 3)
    assert (decision.intent, decision.wanted) == (Intent.NOTHING, 3)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU])
def test_reload_and_resizing_are_ignored_while_stopping(signum: int) -> None:
    assert decide_signal(signum, Phase.STOPPING, 3) == SignalDecision(Intent.NOTHING, 3, "none: stopping")


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.RELOADING])
def test_hup_reloads_while_running_or_reloading(phase: Phase) -> None:
    assert decide_signal(signal.SIGHUP, phase, 2) == SignalDecision(Intent.RELOAD, 2, "reload")


def test_ttin_adds_a_worker_and_ttou_removes_one() -> None:
    assert decide_signal(signal.SIGTTIN, Phase.RUNNING, 2) == SignalDecision(Intent.NOTHING, 3, "one worker more")
    assert decide_signal(signal.SIGTTOU, Phase.RUNNING, 3) == SignalDecision(Intent.NOTHING, 2, "one worker fewer")


def test_ttou_never_goes_below_the_minimum() -> None:
    decision = decide_signal(signal.SIGTTOU, Phase.RUNNING, MIN_WORKERS)
    assert (decision.intent, decision.wanted) == (Intent.NOTHING, MIN_WORKERS)
    assert decision.effect == f"none: {MIN_WORKERS} worker is the minimum"


def test_a_reload_in_progress_still_hears_stop_and_resize() -> None:
    assert decide_signal(signal.SIGTERM, Phase.RELOADING, 2).intent is Intent.STOP_GRACEFULLY
    assert decide_signal(signal.SIGTTIN, Phase.RELOADING, 2).wanted == 3


def test_phases_that_are_stopping() -> None:
    assert [phase for phase in Phase if phase.is_stopping] == [Phase.STOPPING, Phase.STOPPING_NOW]
