"""Hiding passwords: a DSN as messages show it, and any text (a libpq error, a traceback, a task's
exception) with password-like material replaced by ``***``.

No driver import: the log chain and the worker use it to scrub every value they show.

>>> redact("postgresql://app:secret@db:5432/app")
'postgresql://app:***@db:5432/app'
>>> redact("host=db password='s3 cret' dbname=app")
'host=db password=*** dbname=app'
"""

from __future__ import annotations

import re
import urllib.parse

HIDDEN = "***"
ENVIRONMENT_DEFAULTS = "the PG* environment defaults"
# A piece of a password this long or longer is hidden wherever libpq echoes it.
SHORTEST_HIDDEN_PIECE = 3

# libpq's connection keywords (PostgreSQL 17). A malformed bare password (a space in it, unquoted)
# runs on to the next of these, so that no word of it is shown.
LIBPQ_KEYWORDS = (
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth",
    "channel_binding", "connect_timeout", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode", "sslnegotiation",
    "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslcertmode", "sslrootcert",
    "sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "service",
    "target_session_attrs", "load_balance_hosts",
)  # fmt: skip
_KEYWORD = "(?:" + "|".join(LIBPQ_KEYWORDS) + ")"

# A URI up to the first character that cannot belong to it in running text.
_URI = re.compile(r"postgres(?:ql)?://[^\s'\"<>]*", re.IGNORECASE)
# The keyword form: password=value, the value single-quoted, or bare; a backslash escapes the
# next character in both. Also catches sslpassword= and PGPASSWORD=.
_BARE_WORD = r"(?:\\.|[^\s\\])+\\?"
_PASSWORD_KEYWORD = re.compile(
    rf"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:{_BARE_WORD})?(?:[ \t]+(?!{_KEYWORD}\s*=){_BARE_WORD})*)",
    re.IGNORECASE,
)
# A URI's query parameter password=value, up to the next parameter libpq knows.
_PASSWORD_PARAMETER = re.compile(rf"([?&](?:ssl)?password=)((?:[^&]|&(?!{_KEYWORD}=))*)", re.IGNORECASE)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def redact(dsn: str) -> str:
    """The DSN with every password replaced by ``***``, in URI or keyword form, malformed or not."""
    if _URI.match(dsn.strip()):
        return _redact_uri(dsn)
    return _PASSWORD_KEYWORD.sub(rf"\g<1>{HIDDEN}", dsn)


def _redact_uri(uri: str) -> str:
    # The query's password first: it may hold an "@" that would look like the end of userinfo.
    uri = _PASSWORD_PARAMETER.sub(rf"\g<1>{HIDDEN}", uri)
    # userinfo ends at the last "@": a malformed password may hold "@", "/", "?" or "#"
    # unencoded, and hiding too much is better than showing a piece of it.
    scheme_end = uri.index("://") + 3
    at = uri.rfind("@", scheme_end)
    if at >= 0:
        user, colon, _ = uri[scheme_end:at].partition(":")
        if colon:
            uri = f"{uri[:scheme_end]}{user}:{HIDDEN}{uri[at:]}"
    return uri


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
    """A psycopg2 error's text on one line, scrubbed, with the DSN's own password removed.

    libpq misreads a malformed password as a port, a host or a database name and echoes that
    piece (``invalid integer value "k9+" for connection option "port"``): every run of
    ``SHORTEST_HIDDEN_PIECE`` or more characters that is part of the password is hidden too,
    unless the redacted DSN shows that run anyway (a user or host name).
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = scrub("; ".join(lines) or type(error).__name__)
    secrets = _passwords_in(dsn)
    return _without_pieces_of(secrets, text, shown=redact(dsn)) if secrets else text


def _passwords_in(dsn: str) -> list[str]:
    """The passwords a DSN carries, as written and as libpq reads them (decoded, unescaped)."""
    found: list[str] = []
    if _URI.match(dsn.strip()):
        found += [match.group(2) for match in _PASSWORD_PARAMETER.finditer(dsn)]
        scheme_end = dsn.index("://") + 3
        at = dsn.rfind("@", scheme_end)
        if at >= 0:
            found.append(dsn[scheme_end:at].partition(":")[2])
        found += [urllib.parse.unquote(secret) for secret in found]
    else:
        written = [match.group(2) for match in _PASSWORD_KEYWORD.finditer(dsn)]
        found += written + [_ESCAPED.sub(r"\1", secret.strip("'")) for secret in written]
    return [secret for secret in set(found) if len(secret) >= SHORTEST_HIDDEN_PIECE]


def _without_pieces_of(secrets: list[str], text: str, shown: str) -> str:
    """``text`` with each longest run that is part of a secret replaced by ``***``."""
    kept: list[str] = []
    start = index = 0
    while index < len(text):
        length = 0
        while index + length < len(text) and any(text[index : index + length + 1] in secret for secret in secrets):
            length += 1
        run = text[index : index + length]
        if length >= SHORTEST_HIDDEN_PIECE and run not in shown:
            kept += [text[start:index], HIDDEN]
            index = start = index + length
        else:
            index += 1
    kept.append(text[start:])
    return "".join(kept)


__all__ = ["redact", "scrub", "describe", "reason_of", "HIDDEN"]
