"""Processes as the cluster code needs to see them: pid files, liveness, command lines."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

POLL_S = 0.02


def read_pid(path: Path) -> int | None:
    try:
        first_line = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first_line) if first_line.isdigit() else None


def process_runs(pid: int) -> bool:
    """Alive and not a zombie (a zombie postmaster still blocks a restart, but serves nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS), or it just exited: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments, or None where /proc cannot tell: macOS, a process that is gone,
    or one still exiting (a SIGKILLed postmaster shows no arguments while its children live on)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(arg) for arg in raw.split(b"\0") if arg] or None


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True
