"""DSN resolution (argument, CABBAGE_DSN, libpq's PG* defaults), redaction, and connecting with clear errors.

A DSN is shown only through ``redact()`` or ``describe()``; libpq's own error texts go through
``scrub()`` first, because libpq echoes a malformed URI whole, password included.

>>> redact("postgresql://app:secret@db:5432/app")
'postgresql://app:***@db:5432/app'
>>> redact("host=db password='s3 cret' dbname=app")
'host=db password=*** dbname=app'
"""

from __future__ import annotations

import os
import re
from typing import Any

import psycopg2
import psycopg2.extensions

from cabbage.exceptions import DatabaseUnavailable

DSN_VARIABLE = "CABBAGE_DSN"
HIDDEN = "***"
ENVIRONMENT_DEFAULTS = "the PG* environment defaults"

# A URI up to the first character that cannot belong to it in running text.
_URI = re.compile(r"postgres(?:ql)?://[^\s'\"<>]*", re.IGNORECASE)
# The keyword form: password=value, the value bare or single-quoted with backslash escapes
# (also catches sslpassword= and PGPASSWORD=).
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)
# A URI's query parameter password=value.
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&#\s]*", re.IGNORECASE)


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: ``dsn`` when given, else ``$CABBAGE_DSN``, else "" (libpq's PG* variables)."""
    if dsn is not None:
        return dsn
    return os.environ.get(DSN_VARIABLE, "")


def redact(dsn: str) -> str:
    """The DSN with every password replaced by ``***``, in URI or keyword form."""
    if _URI.match(dsn.strip()):
        return _redact_uri(dsn)
    return _PASSWORD_KEYWORD.sub(rf"\g<1>{HIDDEN}", dsn)


def _redact_uri(uri: str) -> str:
    # userinfo ends at the last "@" before the query string: a malformed password may hold "@"
    # or "/", and hiding too much is better than showing a piece of it.
    scheme_end = uri.index("://") + 3
    query_start = uri.find("?", scheme_end)
    authority_end = len(uri) if query_start < 0 else query_start
    at = uri.rfind("@", scheme_end, authority_end)
    if at >= 0:
        userinfo = uri[scheme_end:at]
        user, colon, _ = userinfo.partition(":")
        if colon:
            uri = f"{uri[:scheme_end]}{user}:{HIDDEN}{uri[at:]}"
    return _PASSWORD_PARAMETER.sub(rf"\g<1>{HIDDEN}", uri)


def scrub(text: str) -> str:
    """Text (a libpq error, a traceback line) with any password-like material hidden."""
    lowered = text.lower()
    if "postgres" not in lowered and "password" not in lowered:
        return text  # nothing either pattern could match; the common case of every log value
    pieces: list[str] = []
    position = 0
    for match in _URI.finditer(text):
        pieces.append(_PASSWORD_KEYWORD.sub(rf"\g<1>{HIDDEN}", text[position : match.start()]))
        pieces.append(_redact_uri(match.group(0)))
        position = match.end()
    pieces.append(_PASSWORD_KEYWORD.sub(rf"\g<1>{HIDDEN}", text[position:]))
    return "".join(pieces)


def describe(dsn: str) -> str:
    """The DSN as messages show it: redacted, and "" named for what it means."""
    return redact(dsn) if dsn.strip() else ENVIRONMENT_DEFAULTS


def reason_of(error: BaseException, dsn: str = "") -> str:
    """A psycopg2 error's text on one line, scrubbed, with the DSN's own password removed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = scrub("; ".join(lines) or type(error).__name__)
    for secret in _passwords_in(dsn):
        text = text.replace(secret, HIDDEN)
    return text


def _passwords_in(dsn: str) -> list[str]:
    """The passwords a DSN carries, and pieces a malformed one could be echoed as (split at "@")."""
    found: list[str] = []
    uri = _URI.match(dsn.strip())
    if uri:
        scheme_end = dsn.index("://") + 3
        at = dsn.rfind("@", scheme_end)
        if at >= 0:
            found.append(dsn[scheme_end:at].partition(":")[2])
    found += [match.group(2).strip("'") for match in _PASSWORD_KEYWORD.finditer(dsn)]
    found += [match.group(0).partition("=")[2] for match in _PASSWORD_PARAMETER.finditer(dsn)]
    found += [piece for secret in list(found) for piece in secret.split("@")]
    # Longest first, so that a piece never spoils the replacement of the whole.
    return sorted({secret for secret in found if len(secret) >= 3}, key=len, reverse=True)


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


__all__ = ["resolve_dsn", "redact", "scrub", "describe", "connect", "reason_of", "DSN_VARIABLE"]
