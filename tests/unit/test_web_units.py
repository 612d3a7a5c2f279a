"""The admin website's pieces that need no database: token rules, the redirect after sign-in,
the wrong-token throttle, security headers. The app is built for real; no route here reads
the database."""

from __future__ import annotations

import pytest

pytest.importorskip("flask", reason="the web extra is not installed")

from cabbage.cli import main  # noqa: E402
from cabbage.cli.exit_codes import EXIT_USAGE  # noqa: E402
from cabbage.exceptions import ConfigurationError  # noqa: E402
from cabbage.web import create_app  # noqa: E402

UNREACHABLE_DSN = "host=127.0.0.1 port=1 connect_timeout=1"
TOKEN = "correct-horse-battery-staple"


# -- the token --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "CABBAGE_WEB_TOKEN is set but blank: unset it for a read-only server"),
        ("   ", "CABBAGE_WEB_TOKEN is set but blank"),
        ("short-token", "CABBAGE_WEB_TOKEN is 11 characters long, a token needs 16 or more: generate one with "
                        "python -c 'import secrets; print(secrets.token_urlsafe(32))'"),
        ("x" * 15, "is 15 characters long"),
        (f" {TOKEN}", "starts or ends with whitespace"),
        (f"{TOKEN}\n", "starts or ends with whitespace"),
    ],
)  # fmt: skip
def test_a_blank_short_or_padded_token_is_refused_at_start(token, message):
    with pytest.raises(ConfigurationError) as raised:
        create_app(UNREACHABLE_DSN, token=token)
    assert message in str(raised.value)
    assert token.strip() not in str(raised.value) or not token.strip()


def test_a_token_of_16_characters_or_none_is_taken():
    assert create_app(UNREACHABLE_DSN, token="x" * 16).config["CABBAGE_READ_ONLY"] is False
    assert create_app(UNREACHABLE_DSN, token=None).config["CABBAGE_READ_ONLY"] is True


@pytest.mark.usefixtures("logging_as_it_was")
@pytest.mark.parametrize("token", ["", "tooshort"])
def test_cabbage_web_refuses_a_blank_or_short_token_before_it_binds(token, monkeypatch, capsys):
    monkeypatch.setenv("CABBAGE_WEB_TOKEN", token)
    assert main(["web", "--dsn", UNREACHABLE_DSN, "--port", "1"]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith("cabbage: CABBAGE_WEB_TOKEN is ") and error.count("\n") == 1
    assert "secrets.token_urlsafe(32)" in error


# -- the redirect after sign-in ---------------------------------------------------------------------

OTHER_ORIGINS = [
    "//evil.example/", "/\t/evil.example", "/%09/evil.example", "/\\evil.example", "\\\\evil.example",
    "/\r\n/evil.example", "/%0d%0a/evil.example", "https://evil.example/", "javascript:alert(1)",
    "/%2F/evil.example", "/%5Cevil.example", "evil.example", "/\x00/evil.example", " //evil.example",
    "/\u3000/evil.example", "",
]  # fmt: skip


@pytest.mark.parametrize("target", OTHER_ORIGINS)
def test_a_target_a_browser_could_read_as_another_site_is_not_local(target):
    from cabbage.web.auth import is_local_path

    assert not is_local_path(target)


@pytest.mark.parametrize("target", ["/", "/jobs", "/jobs?status=failed&lock=a%20b", "/jobs/42", "/locks#top"])
def test_a_path_of_this_site_is_local(target):
    from cabbage.web.auth import is_local_path

    assert is_local_path(target)


@pytest.mark.parametrize("target", OTHER_ORIGINS)
def test_sign_in_goes_back_to_this_site_only(target):
    client = create_app(UNREACHABLE_DSN, token=TOKEN).test_client()
    answer = client.post("/login", data={"token": TOKEN, "next": target})
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    page = client.get("/login", query_string={"next": target})
    assert page.status_code == 200 and 'name="next" value="/"' in page.get_data(as_text=True)


def test_sign_in_goes_back_to_the_page_it_came_from():
    client = create_app(UNREACHABLE_DSN, token=TOKEN).test_client()
    answer = client.post("/login", data={"token": TOKEN, "next": "/jobs?status=failed"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/jobs?status=failed"


# -- headers and cookies ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/api/v1/openapi.json", "/api/v1/jobs/1/retry", "/no/such/page"])
def test_every_answer_carries_the_security_headers_and_no_store(path):
    answer = create_app(UNREACHABLE_DSN, token=TOKEN).test_client().get(path)
    assert answer.status_code in (200, 404, 405)
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'self';")
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert (answer.headers["X-Frame-Options"], answer.headers["X-Content-Type-Options"]) == ("DENY", "nosniff")
    assert answer.headers["Cache-Control"] == "no-store"


def test_the_stylesheet_may_be_cached():
    answer = create_app(UNREACHABLE_DSN).test_client().get("/static/cabbage.css")
    assert answer.status_code == 200 and "no-store" not in answer.headers.get("Cache-Control", "")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def session_cookie_after_sign_in(app, base_url: str = "http://localhost", **headers: str) -> str:
    answer = app.test_client().post("/login", data={"token": TOKEN}, base_url=base_url, headers=headers)
    assert answer.status_code == 303
    (cookie,) = [value for value in answer.headers.getlist("Set-Cookie") if value.startswith("cabbage_session=")]
    return cookie


def test_the_session_cookie_is_secure_over_https_only():
    app = create_app(UNREACHABLE_DSN, token=TOKEN)
    assert "; Secure" in session_cookie_after_sign_in(app, "https://localhost")
    plain = session_cookie_after_sign_in(app)
    assert "; Secure" not in plain and "; HttpOnly" in plain and "SameSite=Strict" in plain


def test_x_forwarded_proto_counts_only_when_the_proxy_is_trusted():
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    assert "; Secure" not in session_cookie_after_sign_in(create_app(UNREACHABLE_DSN, token=TOKEN), **forwarded)
    trusted = create_app(UNREACHABLE_DSN, token=TOKEN, trust_proxy=True)
    assert "; Secure" in session_cookie_after_sign_in(trusted, **forwarded)


# -- the wrong-token throttle -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_is_refused_after_its_allowed_wrong_tokens_until_the_window_passes():
    from cabbage.web.throttle import Throttle

    clock = FakeClock()
    throttle = Throttle(allowed=3, window_s=60, clock=clock)
    assert [throttle.record_failure("a") for _ in range(3)] == [False, False, True]
    assert throttle.retry_after_s("a") == 60 and throttle.retry_after_s("b") == 0
    clock.now += 59.5
    assert throttle.retry_after_s("a") == 0.5
    clock.now += 0.5
    assert throttle.retry_after_s("a") == 0


def test_the_window_slides_over_the_last_wrong_tokens():
    from cabbage.web.throttle import Throttle

    clock = FakeClock()
    throttle = Throttle(allowed=3, window_s=60, clock=clock)
    throttle.record_failure("a")
    clock.now += 50
    throttle.record_failure("a")
    throttle.record_failure("a")
    assert throttle.retry_after_s("a") == 10  # until the first of the three is 60 s old
    clock.now += 10
    assert throttle.retry_after_s("a") == 0
    throttle.record_failure("a")  # the first one has expired: two within the window, then this
    assert throttle.retry_after_s("a") == 50


def test_the_throttle_remembers_a_bounded_number_of_clients_and_tries():
    from cabbage.web.throttle import Throttle

    throttle = Throttle(allowed=2, window_s=60, max_clients=100, clock=FakeClock())
    for number in range(1000):
        for _ in range(5):
            throttle.record_failure(f"10.0.{number // 256}.{number % 256}")
    assert len(throttle._failures) == 100
    assert all(len(times) <= 2 for times in throttle._failures.values())
    assert throttle.retry_after_s("10.0.3.231") > 0 and throttle.retry_after_s("10.0.0.0") == 0  # the oldest forgotten


def test_the_sign_in_form_answers_429_with_retry_after_after_five_wrong_tokens():
    client = create_app(UNREACHABLE_DSN, token=TOKEN).test_client()
    assert [client.post("/login", data={"token": "wrong"}).status_code for _ in range(5)] == [401] * 5
    refused = client.post("/login", data={"token": TOKEN})  # even the right one, while throttled
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "too many wrong tokens from 127.0.0.1: try again in" in refused.get_data(as_text=True)
    assert client.post("/login", data={"token": ""}).status_code == 401  # no token presented: not counted, not refused


# -- the connection pool ----------------------------------------------------------------------------


def test_a_failed_connect_gives_its_pool_slot_back():
    client = create_app(UNREACHABLE_DSN, pool_size=1, pool_wait_s=0.1).test_client()
    for _ in range(3):
        answer = client.get("/api/v1/stats")
        assert answer.status_code == 503 and answer.get_json()["error"].startswith("cannot connect to host=127.0.0.1")


@pytest.mark.parametrize(("options", "message"), [({"pool_size": 0}, "at least 1, got 0"), ({"pool_wait_s": -1}, ">= 0 s, got -1")])
def test_a_pool_that_could_lend_nothing_is_refused(options, message):
    with pytest.raises(ConfigurationError, match=message):
        create_app(UNREACHABLE_DSN, **options)


def test_the_command_line_default_pool_size_is_the_apps():
    from cabbage.cli.parser import WEB_POOL_SIZE, parse_arguments
    from cabbage.web.database import DEFAULT_POOL_SIZE

    assert parse_arguments(["web"]).pool_size == WEB_POOL_SIZE == DEFAULT_POOL_SIZE
    assert parse_arguments(["web", "--pool-size", "12"]).pool_size == 12
