"""DSN resolution, redaction and scrubbing: no password ever reaches a message (no database needed)."""

from __future__ import annotations

import urllib.parse

import psycopg2
import psycopg2.extensions
import pytest

from cabbage import dsn, redaction
from cabbage.exceptions import DatabaseUnavailable


def test_an_explicit_dsn_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CABBAGE_DSN", "postgresql://env@db/app")
    assert dsn.resolve_dsn("postgresql://flag@db/app") == "postgresql://flag@db/app"
    assert dsn.resolve_dsn("") == "", "an explicit empty DSN means libpq's PG* defaults"


def test_cabbage_dsn_then_libpq_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CABBAGE_DSN", "postgresql://env@db/app")
    assert dsn.resolve_dsn(None) == "postgresql://env@db/app"
    monkeypatch.delenv("CABBAGE_DSN")
    assert dsn.resolve_dsn(None) == ""


@pytest.mark.parametrize(
    "given, shown",
    [
        ("postgresql://app:secret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgres://app:secret@db/app", "postgres://app:***@db/app"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("postgresql://db/app", "postgresql://db/app"),
        ("postgresql://app:p@ss/w:rd@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app:secret@h1:5432,h2:5433/app?sslmode=require",
         "postgresql://app:***@h1:5432,h2:5433/app?sslmode=require"),
        ("postgresql://db/app?user=app&password=secret&sslmode=require",
         "postgresql://db/app?user=app&password=***&sslmode=require"),
        ("host=db password=secret dbname=app", "host=db password=*** dbname=app"),
        ("host=db password = 'se cr\\'et' dbname=app", "host=db password = *** dbname=app"),
        ("host=db dbname=app", "host=db dbname=app"),
    ],
)
def test_redact_hides_every_password(given: str, shown: str) -> None:
    assert dsn.redact(given) == shown
    assert "secret" not in dsn.redact(given) and "se cr" not in dsn.redact(given)


def test_describe_names_the_environment_defaults() -> None:
    assert dsn.describe("") == "the PG* environment defaults"
    assert dsn.describe("postgresql://app:secret@db/app") == "postgresql://app:***@db/app"


@pytest.mark.parametrize(
    "libpq_text",
    [
        'invalid URI query parameter: "postgresql://user:secret@db/app?bogus=1"',
        'missing "=" after "postgresql://user:secret@" in connection info string',
        "could not parse password=secret host=db",
        "connection to server failed, dsn was 'postgres://user:secret@db:5432/app'",
    ],
)
def test_scrub_hides_passwords_echoed_by_libpq(libpq_text: str) -> None:
    scrubbed = dsn.scrub(libpq_text)
    assert "secret" not in scrubbed
    assert "***" in scrubbed


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = 'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    assert dsn.scrub(text) == text


def test_connect_failure_names_the_redacted_dsn_on_one_line() -> None:
    unreachable = "postgresql://app:secret@127.0.0.1:1/app"
    with pytest.raises(DatabaseUnavailable) as raised:
        dsn.connect(unreachable, connect_timeout_s=2)
    message = str(raised.value)
    assert message.startswith("cannot connect to postgresql://app:***@127.0.0.1:1/app: ")
    assert "secret" not in message and "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_connect_failure_on_a_malformed_uri_does_not_echo_its_password() -> None:
    # libpq splits this at the first "@": "ss" becomes part of the host it reports.
    with pytest.raises(DatabaseUnavailable) as raised:
        dsn.connect("postgresql://app:pa@ssword@127.0.0.1:1/app", connect_timeout_s=2)
    assert "pa@ssword" not in str(raised.value) and "ssword" not in str(raised.value)


# -- passwords holding URI-special characters -----------------------------------------------------

SPECIAL_CHARACTERS = ["?", "/", "#", "@", ":", "%", "+", "=", " ", "'", '"', "\\"]
# Letters no libpq message or DSN part holds, so that any 3 characters of one that are shown leak.
PASSWORDS = [f"Zq7{character}Xv9w" for character in SPECIAL_CHARACTERS] + ["Zq7?Xv/9w#Q@:%2+= '\"\\k"]


def quoted_keyword_value(password: str) -> str:
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dsns_holding(password: str) -> dict[str, str]:
    """One DSN per form a password can take, each to a closed port (connecting fails at once)."""
    encoded = urllib.parse.quote(password, safe="")
    return {
        "uri raw": f"postgresql://app:{password}@127.0.0.1:1/app",
        "uri percent-encoded": f"postgresql://app:{encoded}@127.0.0.1:1/app",
        "uri query raw": f"postgresql://127.0.0.1:1/app?user=app&password={password}&connect_timeout=2",
        "uri query percent-encoded": f"postgresql://127.0.0.1:1/app?user=app&password={encoded}",
        "keyword quoted": f"host=127.0.0.1 port=1 user=app password={quoted_keyword_value(password)} dbname=app",
        "keyword bare": f"host=127.0.0.1 port=1 user=app password={password} dbname=app",
    }


def pieces_of(*secrets: str) -> set[str]:
    """Every run of 3 characters of each secret: showing any of them shows a piece of it."""
    return {secret[start : start + 3] for secret in secrets for start in range(len(secret) - 2)}


def password_cases() -> list:
    return [
        pytest.param(password, form, written, id=f"{form}-{password!r}")
        for password in PASSWORDS
        for form, written in dsns_holding(password).items()
    ]


def written_password(form: str, password: str) -> str:
    """The password as the DSN spells it (encoded, quoted with escapes)."""
    if "percent-encoded" in form:
        return urllib.parse.quote(password, safe="")
    if form == "keyword quoted":
        return quoted_keyword_value(password)[1:-1]
    return password


def assert_hides(password: str, form: str, text: str) -> None:
    leaked = {piece for piece in pieces_of(password, written_password(form, password)) if piece in text}
    assert not leaked, f"{text!r} shows {sorted(leaked)} of the password"


@pytest.mark.parametrize(("password", "form", "written"), password_cases())
def test_redact_and_describe_hide_every_piece_of_the_password(password: str, form: str, written: str) -> None:
    for shown in (dsn.redact(written), dsn.describe(written)):
        assert_hides(password, form, shown)
        assert "127.0.0.1" in shown and dsn.HIDDEN in shown


@pytest.mark.parametrize(("password", "form", "written"), password_cases())
def test_the_reason_libpq_gives_hides_every_piece_of_the_password(password: str, form: str, written: str) -> None:
    try:
        psycopg2.connect(written, connect_timeout=2)
    except psycopg2.Error as exc:
        error = exc
    else:
        pytest.fail(f"connecting with {dsn.redact(written)} succeeded")
    reason = dsn.reason_of(error, written)
    assert_hides(password, form, reason)
    assert reason and "\n" not in reason

    with pytest.raises(DatabaseUnavailable) as raised:
        dsn.connect(written, connect_timeout_s=2)
    assert_hides(password, form, str(raised.value))


@pytest.mark.parametrize(
    ("libpq_text", "hidden"),
    [
        ('invalid integer value "k9+" for connection option "port"', "k9+"),
        ('could not translate host name "ssword@db" to address: Name or service not known', "ssword"),
        ('missing "=" after "ace" in connection info string', "ace"),
    ],
)
def test_reason_hides_the_pieces_of_a_malformed_password_libpq_echoes(libpq_text: str, hidden: str) -> None:
    secret_dsns = {"k9+": "postgresql://app:k9+/x7@db/app", "ssword": "postgresql://app:pa@ssword@db/app",
                   "ace": "host=db password=sp ace user=app"}  # fmt: skip
    reason = dsn.reason_of(RuntimeError(libpq_text), secret_dsns[hidden])
    assert hidden not in reason and dsn.HIDDEN in reason


def test_reason_keeps_what_the_redacted_dsn_shows_anyway() -> None:
    # The password holds the user's name: the user name in libpq's message stays readable.
    text = 'connection to server failed: FATAL:  role "appuser" does not exist'
    assert dsn.reason_of(RuntimeError(text), "postgresql://appuser:appuser-2024@db/app") == text


def test_a_bare_password_runs_to_the_next_libpq_keyword() -> None:
    assert dsn.redact("host=db password=sp ace d dbname=app") == "host=db password=*** dbname=app"
    assert dsn.redact("password=sp ace=d user=app") == "password=*** user=app"
    assert dsn.redact("host=db password=a\\ b user=app") == "host=db password=*** user=app"


def test_every_listed_keyword_is_one_libpq_knows() -> None:
    for keyword in redaction.LIBPQ_KEYWORDS:
        psycopg2.extensions.parse_dsn(f"{keyword}=''")  # raises on an unknown keyword
