"""What a signal means to the master: its phase, the intents a signal records, pure decisions.

``decide_signal(signum, phase, wanted)`` is a pure function of the signal, the phase and the
worker count, so the rules of the signal table (ARCHITECTURE section 3) are unit tests, as
gunicorn tests its arbiter's decisions; the master only carries the decision out.
"""

from __future__ import annotations

import dataclasses
import enum
import signal

from supervisor import signals

MIN_WORKERS = 1


class Phase(enum.Enum):
    RUNNING = "running"
    RELOADING = "reloading"  # from HUP until READY=1 is sent again
    STOPPING = "stopping"  # graceful: children finish their job
    STOPPING_NOW = "stopping now"  # fast: children are killed

    @property
    def is_stopping(self) -> bool:
        return self in (Phase.STOPPING, Phase.STOPPING_NOW)


class Intent(enum.Enum):
    """What the master does about a signal; worker count changes are only a new ``wanted``."""

    NOTHING = "nothing"
    STOP_GRACEFULLY = "stop gracefully"
    STOP_NOW = "stop now"
    RELOAD = "reload"


@dataclasses.dataclass(frozen=True)
class SignalDecision:
    intent: Intent
    wanted: int  # the worker count afterwards: TTIN and TTOU change it, reconcile follows it
    effect: str  # what the signal_received line says happened


def decide_signal(signum: int, phase: Phase, wanted: int) -> SignalDecision:
    """What ``signum`` means in ``phase`` with ``wanted`` workers.

    TERM/INT: graceful stop, or fast stop when already stopping gracefully; QUIT: fast stop;
    HUP: reload; TTIN/TTOU: one worker more/fewer, never fewer than MIN_WORKERS. Once stopping,
    only a fast stop is still heard.
    """
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    if signum == signal.SIGQUIT or (signum in stop_signals and phase is Phase.STOPPING):
        if phase is Phase.STOPPING_NOW:
            return SignalDecision(Intent.NOTHING, wanted, "none: already stopping now")
        return SignalDecision(Intent.STOP_NOW, wanted, "fast stop")
    if phase.is_stopping:
        return SignalDecision(Intent.NOTHING, wanted, "none: stopping")
    if signum in stop_signals:
        return SignalDecision(Intent.STOP_GRACEFULLY, wanted, "graceful stop")
    if signum == signal.SIGHUP:
        return SignalDecision(Intent.RELOAD, wanted, "reload")
    if signum == signal.SIGTTIN:
        return SignalDecision(Intent.NOTHING, wanted + 1, "one worker more")
    if signum == signal.SIGTTOU and wanted > MIN_WORKERS:
        return SignalDecision(Intent.NOTHING, wanted - 1, "one worker fewer")
    if signum == signal.SIGTTOU:
        return SignalDecision(Intent.NOTHING, wanted, f"none: {MIN_WORKERS} worker is the minimum")
    return SignalDecision(Intent.NOTHING, wanted, f"none: {signals.name_of(signum)} is not handled")
