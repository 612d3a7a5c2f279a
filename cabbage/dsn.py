"""DSN resolution (argument, CABBAGE_DSN, libpq's PG* defaults), and connecting with clear errors.

A DSN is shown only through ``redact()`` or ``describe()`` (``cabbage.redaction``, re-exported
here); libpq's own error texts go through ``reason_of()`` first, because libpq echoes a
malformed URI whole, password included.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg2
import psycopg2.extensions

from cabbage.exceptions import ConnectionSlotsExhausted, DatabaseUnavailable
from cabbage.redaction import HIDDEN, describe, reason_of, redact, scrub

DSN_VARIABLE = "CABBAGE_DSN"
# A TCP connection whose peer vanished (a cut network, a host that died) fails within about
# 20 s instead of the kernel's 15 minutes: keepalives probe an idle one, tcp_user_timeout bounds
# data left unacknowledged. Each is libpq's keyword, its PG* variable, and cabbage's default;
# ignored on unix sockets. docs/deployment.md says how to choose them.
KEEPALIVE_DEFAULTS: dict[str, tuple[str, Any]] = {
    "keepalives": ("PGKEEPALIVES", 1),
    "keepalives_idle": ("PGKEEPALIVESIDLE", 10),
    "keepalives_interval": ("PGKEEPALIVESINTERVAL", 3),
    "keepalives_count": ("PGKEEPALIVESCOUNT", 3),
    "tcp_user_timeout": ("PGTCPUSERTIMEOUT", 20_000),  # milliseconds
}
# SQLSTATE too_many_connections (53300): "sorry, too many clients already" and "remaining
# connection slots are reserved ..." alike; libpq reports a refusal at start-up without one.
TOO_MANY_CONNECTIONS = "53300"
_OUT_OF_SLOTS_TEXTS = ("too many clients", "remaining connection slots are reserved")
SLOTS_ADVICE = (
    "every connection slot of the server is taken (max_connections): run fewer workers (--workers), "
    "put a pooler in session mode in front of PostgreSQL, or raise max_connections"
)


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: ``dsn`` when given, else ``$CABBAGE_DSN``, else "" (libpq's PG* variables)."""
    if dsn is not None:
        return dsn
    return os.environ.get(DSN_VARIABLE, "")


def connect(
    dsn: str,
    *,
    autocommit: bool = True,
    application_name: str = "cabbage",
    connect_timeout_s: int = 10,
) -> psycopg2.extensions.connection:
    """Opens a psycopg2 connection, or raises DatabaseUnavailable naming the redacted DSN and why.

    ``application_name``, ``connect_timeout_s`` and the TCP keepalive and user-timeout
    settings of ``KEEPALIVE_DEFAULTS`` apply unless the DSN or the matching PG* variable already
    says otherwise. A server with no connection slot left raises ConnectionSlotsExhausted.
    """
    options = connection_options(dsn, application_name=application_name, connect_timeout_s=connect_timeout_s)
    try:
        connection = psycopg2.connect(dsn, **options)
    except psycopg2.Error as exc:
        raise connect_error(exc, dsn) from None  # from None: the chained error is libpq's unscrubbed text
    connection.autocommit = autocommit
    return connection


def connection_options(dsn: str, *, application_name: str = "cabbage", connect_timeout_s: int = 10) -> dict[str, Any]:
    """What ``connect`` adds to a DSN: each default the DSN and libpq's PG* variables leave unset."""
    options: dict[str, Any] = {}
    given = _keywords_in(dsn)
    defaults = {
        "application_name": ("PGAPPNAME", application_name),
        "connect_timeout": ("PGCONNECT_TIMEOUT", connect_timeout_s),
        **KEEPALIVE_DEFAULTS,
    }
    for keyword, (variable, value) in defaults.items():
        if keyword not in given and variable not in os.environ:
            options[keyword] = value
    return options


def connect_error(exc: BaseException, dsn: str) -> DatabaseUnavailable:
    """The cabbage error a failed connection attempt raises, its text scrubbed."""
    reason = reason_of(exc, dsn)
    if is_out_of_connection_slots(exc):
        return ConnectionSlotsExhausted(f"cannot connect to {describe(dsn)}: {reason}: {SLOTS_ADVICE}")
    return DatabaseUnavailable(f"cannot connect to {describe(dsn)}: {reason}")


def is_out_of_connection_slots(error: BaseException) -> bool:
    """Whether a psycopg2 error is the server refusing a session for want of a free slot."""
    if getattr(error, "pgcode", None) == TOO_MANY_CONNECTIONS:
        return True
    text = str(error).lower()
    return any(marker in text for marker in _OUT_OF_SLOTS_TEXTS)


def _keywords_in(dsn: str) -> set[str]:
    try:
        return set(psycopg2.extensions.parse_dsn(dsn))
    except psycopg2.Error:
        return set()  # malformed: connect() reports it, scrubbed


__all__ = ["resolve_dsn", "redact", "scrub", "describe", "connect", "reason_of", "DSN_VARIABLE", "HIDDEN"]
