"""Who may write: the bearer token on the API, a login and a CSRF field on the pages.

Reads need nothing. A write is refused with 403 on a read-only server, and with 401 when the
token is missing or wrong; the token is compared in constant time and never logged or echoed.
A client address that presented too many wrong tokens gets 429 for a while (``throttle``).
Signing out ends every session signed in before (a sign-in epoch), and the session cookie is
``Secure`` over HTTPS.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
import urllib.parse

import flask
import structlog
from flask.sessions import SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import TooManyRequests

from cabbage.exceptions import ConfigurationError
from cabbage.web.throttle import Throttle

blueprint = flask.Blueprint("auth", __name__)
log = structlog.get_logger()

CSRF_FIELD = "csrf_token"
TOKEN_FIELD = "token"
EPOCH_KEY = "cabbage_sign_in_epoch"
THROTTLE_KEY = "cabbage_token_throttle"
MIN_TOKEN_LENGTH = 16
GENERATE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_PRINTABLE_PATH = re.compile(r"[!-\[\]-~]+")  # printable ASCII without space and backslash
_BROWSER_DROPS = re.compile(r"[\t\n\r]")  # from anywhere in a URL, by the URL standard


def check_token(token: str | None) -> None:
    """Refuses a token that is blank, padded with whitespace or shorter than MIN_TOKEN_LENGTH.

    None (no token: a read-only server) passes. The message never shows the token.
    """
    if token is None:
        return
    if not token.strip():
        raise ConfigurationError(
            "CABBAGE_WEB_TOKEN is set but blank: unset it for a read-only server, or set it to a token of "
            f"{MIN_TOKEN_LENGTH} characters or more, such as the output of {GENERATE_TOKEN}"
        )
    if token != token.strip():
        raise ConfigurationError(
            "CABBAGE_WEB_TOKEN starts or ends with whitespace, which no client sends back: remove it"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"CABBAGE_WEB_TOKEN is {len(token)} characters long, a token needs {MIN_TOKEN_LENGTH} or more: "
            f"generate one with {GENERATE_TOKEN}"
        )


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, marked ``Secure`` whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: flask.Flask) -> bool:
        return flask.request.is_secure


def register(app: flask.Flask) -> None:
    """The app's session cookies, its first sign-in epoch, and its wrong-token throttle."""
    app.session_interface = SessionInterface()
    start_new_epoch(app)
    app.extensions[THROTTLE_KEY] = Throttle()


def is_read_only() -> bool:
    return bool(flask.current_app.config["CABBAGE_READ_ONLY"])


def matches_token(given: str | None) -> bool:
    """Whether ``given`` is the token; a wrong one counts against the client's address, and a
    client with too many wrong ones is refused (429) before its token is even compared."""
    token = flask.current_app.config["CABBAGE_TOKEN"]
    if not token or not given:
        return False
    throttle: Throttle = flask.current_app.extensions[THROTTLE_KEY]
    client = flask.request.remote_addr or "unknown"
    retry_after_s = throttle.retry_after_s(client)
    if retry_after_s > 0:
        raise TooManyRequests(
            f"too many wrong tokens from {client}: try again in {math.ceil(retry_after_s)} s",
            retry_after=math.ceil(retry_after_s),
        )
    if hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8")):
        return True
    if throttle.record_failure(client):
        log.warning("web_token_throttled", remote_addr=client, window_s=throttle.window_s)
    return False


def is_signed_in() -> bool:
    """Signed in since the last sign-out: the session carries the app's current sign-in epoch."""
    return not is_read_only() and flask.session.get(EPOCH_KEY) == current_epoch()


def current_epoch() -> str:
    return flask.current_app.extensions[EPOCH_KEY]


def start_new_epoch(app: flask.Flask) -> None:
    """Makes every session cookie issued so far, copies included, count as signed out.

    Flask's session lives in the cookie, so signing out cannot delete it on the server; each
    sign-in records the epoch it happened in, and a new epoch ends them all at once.
    """
    app.extensions[EPOCH_KEY] = secrets.token_urlsafe(16)


def csrf_token() -> str:
    """This session's CSRF value, put in every form that writes."""
    if CSRF_FIELD not in flask.session:
        flask.session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return flask.session[CSRF_FIELD]


def require_api_writer() -> None:
    """Aborts the request unless it carries ``Authorization: Bearer <token>`` on a writable server."""
    if is_read_only():
        flask.abort(403, description="this server is read-only: start it with CABBAGE_WEB_TOKEN set to allow writes")
    if not has_bearer_token():
        log.warning("web_write_refused", path=flask.request.path, remote_addr=flask.request.remote_addr)
        flask.abort(401, description="writes need the header 'Authorization: Bearer <CABBAGE_WEB_TOKEN>'")


def require_trusted_reader() -> None:
    """Aborts unless the request is signed in or carries the bearer token (a read too big for anyone)."""
    if is_read_only():
        flask.abort(403, description="this server is read-only: start it with CABBAGE_WEB_TOKEN set, then sign in")
    if not is_signed_in() and not has_bearer_token():
        flask.abort(401, description="needs the header 'Authorization: Bearer <CABBAGE_WEB_TOKEN>' or a signed-in session")


def has_bearer_token() -> bool:
    scheme, _, given = flask.request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and matches_token(given.strip())


def require_page_writer() -> None:
    """Aborts a form POST unless it is signed in with a matching CSRF field, or carries the token."""
    if is_read_only():
        flask.abort(403, description="this server is read-only: start it with CABBAGE_WEB_TOKEN set to allow writes")
    if matches_token(flask.request.form.get(TOKEN_FIELD)):
        return
    if not is_signed_in():
        log.warning("web_write_refused", path=flask.request.path, remote_addr=flask.request.remote_addr)
        flask.abort(401, description="sign in with the token to retry or cancel jobs")
    if not has_csrf_field():
        flask.abort(403, description="the form is stale or came from another site: reload the page and try again")


def has_csrf_field() -> bool:
    expected = flask.session.get(CSRF_FIELD, "")
    given = flask.request.form.get(CSRF_FIELD, "")
    return bool(expected) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def safe_next(target: str | None) -> str:
    """A path of this site to go back to after signing in; anything else is the overview."""
    if target and is_local_path(target):
        return target
    return flask.url_for("pages.overview")


def is_local_path(target: str) -> bool:
    """Whether no browser can read ``target`` as another origin, nor a header break on it.

    Browsers drop tabs and newlines from a URL and read ``\\`` as ``/`` (``/\\t/evil.example`` is
    ``//evil.example``), so only printable ASCII without a backslash passes; the URL parsed, as
    given and percent-decoded once, read the way a browser would, must have no scheme, no host,
    and a path that starts with a single ``/``.
    """
    if not _PRINTABLE_PATH.fullmatch(target):
        return False
    for candidate in (target, urllib.parse.unquote(target)):
        seen = _BROWSER_DROPS.sub("", candidate).replace("\\", "/")
        parts = urllib.parse.urlsplit(seen)
        # "///x" parses with an empty host, yet a browser reads it as the host "x".
        if parts.scheme or parts.netloc or seen.startswith("//") or not parts.path.startswith("/"):
            return False
    return True


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_path = safe_next(flask.request.values.get("next"))
    if is_read_only():
        return flask.render_template("login.html", next_path=next_path, error="this server is read-only"), 403
    if flask.request.method == "GET":
        return flask.render_template("login.html", next_path=next_path, error=None)
    if not matches_token(flask.request.form.get(TOKEN_FIELD)):
        log.warning("web_sign_in_refused", remote_addr=flask.request.remote_addr)
        return flask.render_template("login.html", next_path=next_path, error="wrong token"), 401
    flask.session.clear()
    flask.session[EPOCH_KEY] = current_epoch()
    csrf_token()
    log.info("web_signed_in", remote_addr=flask.request.remote_addr)
    return flask.redirect(next_path, code=303)


@blueprint.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    """Signs out every session signed in so far; only from a signed-in form, so that another
    site cannot sign everyone out."""
    if is_signed_in() and has_csrf_field():
        start_new_epoch(flask.current_app)
        log.info("web_signed_out", remote_addr=flask.request.remote_addr)
    flask.session.clear()
    return flask.redirect(flask.url_for("pages.overview"), code=303)
