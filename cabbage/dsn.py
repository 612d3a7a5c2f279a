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

from cabbage.exceptions import DatabaseUnavailable
from cabbage.redaction import HIDDEN, describe, reason_of, redact, scrub

DSN_VARIABLE = "CABBAGE_DSN"


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

    ``application_name`` and ``connect_timeout_s`` apply unless the DSN or the PGAPPNAME /
    PGCONNECT_TIMEOUT variables already say otherwise.
    """
    options: dict[str, Any] = {}
    given = _keywords_in(dsn)
    if "application_name" not in given and "PGAPPNAME" not in os.environ:
        options["application_name"] = application_name
    if "connect_timeout" not in given and "PGCONNECT_TIMEOUT" not in os.environ:
        options["connect_timeout"] = connect_timeout_s
    try:
        connection = psycopg2.connect(dsn, **options)
    except psycopg2.Error as exc:
        # from None: the chained psycopg2 error would print libpq's unscrubbed text.
        raise DatabaseUnavailable(f"cannot connect to {describe(dsn)}: {reason_of(exc, dsn)}") from None
    connection.autocommit = autocommit
    return connection


def _keywords_in(dsn: str) -> set[str]:
    try:
        return set(psycopg2.extensions.parse_dsn(dsn))
    except psycopg2.Error:
        return set()  # malformed: connect() reports it, scrubbed


__all__ = ["resolve_dsn", "redact", "scrub", "describe", "connect", "reason_of", "DSN_VARIABLE", "HIDDEN"]
