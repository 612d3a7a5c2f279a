"""DSN resolution, redaction and scrubbing: no password ever reaches a message (no database needed)."""

from __future__ import annotations

import pytest

from cabbage import dsn
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
