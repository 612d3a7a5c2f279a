"""The development database's error and its progress lines on stderr."""
from __future__ import annotations

import sys

from cabbage.exceptions import CabbageError


class DevDbError(CabbageError, RuntimeError):
    """The private PostgreSQL could not be found, prepared, started or stopped."""


def say(message: str) -> None:
    print(f"devdb: {message}", file=sys.stderr, flush=True)

