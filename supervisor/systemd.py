"""The sd_notify datagram: READY, STATUS, WATCHDOG, STOPPING and RELOADING for a Type=notify unit.

systemd passes the socket in ``NOTIFY_SOCKET`` (a path, or an abstract name starting with
``@``) and, with ``WatchdogSec=``, the watchdog period in ``WATCHDOG_USEC``. Outside systemd
every call does nothing. A failed send never stops the supervisor: it returns False.

>>> notifier = SystemdNotifier.from_environment()
>>> notifier.ready("4 workers running")
"""

from __future__ import annotations

import os
import socket
import time
from typing import MutableMapping

# Variables meant for the master alone: removed from the environment once read, so that
# children and the processes they start never speak for the service.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    """Sends notify messages to ``address`` (None: not under systemd, every call is a no-op)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = _socket_address(address) if address else None
        # WATCHDOG=1 every half period, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = watchdog_usec / 2_000_000 if watchdog_usec else None
        self._socket: socket.socket | None = None
        self._last_status: str | None = None

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> "SystemdNotifier":
        """Reads NOTIFY_SOCKET and WATCHDOG_USEC, then removes them from ``environ`` (os.environ)."""
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec = _watchdog_usec(environ)
        for name in NOTIFY_VARIABLES:
            environ.pop(name, None)
        return cls(address, watchdog_usec)

    @property
    def is_enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Sends ``KEY=value`` lines in one datagram; True when systemd got it."""
        if self.address is None:
            return False
        message = "\n".join(assignment.replace("\n", " ") for assignment in assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        self._last_status = status
        return self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        # Newer systemd (253+) wants MONOTONIC_USEC with RELOADING=1 to match the reload up.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str) -> bool:
        self._last_status = status
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """Sends STATUS= when it changed since the last one sent."""
        if status == self._last_status:
            return False
        self._last_status = status
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(address: str) -> str:
    # An abstract socket: "@name" in the variable, a leading NUL byte on the wire.
    return "\0" + address[1:] if address.startswith("@") else address


def _watchdog_usec(environ: MutableMapping[str, str]) -> int | None:
    """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid != str(os.getpid()):
        return None
    return usec if usec > 0 else None
