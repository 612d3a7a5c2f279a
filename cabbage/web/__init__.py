"""The admin website, its REST API under /api/v1/ and /metrics: ``create_app`` builds them.

    from cabbage.web import create_app
    app = create_app(dsn, token=os.environ.get("CABBAGE_WEB_TOKEN"))

Reads are open; writes (retry, cancel) need the token: ``Authorization: Bearer <token>`` on
the API, a login (signed session cookie, plus a CSRF field in each form) on the pages. Without
a token the app is read-only, and ``cabbage web`` serves it on a loopback address only.
Needs the ``web`` extra (Flask, prometheus_client).
"""

from __future__ import annotations

import secrets

import flask
from werkzeug.middleware.proxy_fix import ProxyFix

from cabbage.exceptions import ConfigurationError
from cabbage.heartbeat import DEFAULT_HEARTBEAT_TIMEOUT_S
from cabbage.web import api, auth, database, errors, headers, metrics, pages, views

DEFAULT_FINISHED_WINDOW_S = 300.0


def create_app(
    dsn: str,
    token: str | None = None,
    read_only: bool | None = None,
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
    finished_window_s: float = DEFAULT_FINISHED_WINDOW_S,
    trust_proxy: bool = False,
    pool_size: int = database.DEFAULT_POOL_SIZE,
    pool_wait_s: float = database.DEFAULT_POOL_WAIT_S,
) -> flask.Flask:
    """The Flask app over the database at ``dsn``.

    ``token`` (``CABBAGE_WEB_TOKEN``) must be 16 characters or more, without surrounding
    whitespace; ``read_only`` defaults to True without a token and False with one; writes without a token
    are refused. ``heartbeat_timeout_s`` decides which workers /metrics counts as alive;
    ``finished_window_s`` is the window of its jobs-finished figures. ``trust_proxy``: believe
    one reverse proxy's ``X-Forwarded-Proto`` and ``X-Forwarded-For`` (HTTPS for the session
    cookie's ``Secure``, the client address for throttling); only behind a proxy that sets them.
    At most ``pool_size`` database connections are open; a request waits up to ``pool_wait_s``
    for one, then answers 503.
    """
    auth.check_token(token)
    if read_only is None:
        read_only = token is None
    if not read_only and not token:
        raise ConfigurationError("a writable admin website needs a token: set CABBAGE_WEB_TOKEN")
    app = flask.Flask(__name__)
    app.config.update(
        CABBAGE_DSN=dsn,
        CABBAGE_TOKEN=token,
        CABBAGE_READ_ONLY=read_only,
        CABBAGE_HEARTBEAT_TIMEOUT_S=heartbeat_timeout_s,
        CABBAGE_FINISHED_WINDOW_S=finished_window_s,
        # A fresh key per process: a restart signs everyone out, and no key is ever stored.
        SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_NAME="cabbage_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    auth.register(app)
    if trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    app.json.sort_keys = False  # type: ignore[attr-defined]  # fields in their records' order
    database.register(app, pool_size, pool_wait_s)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(auth.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(metrics.blueprint)
    errors.register(app)
    headers.register(app)
    views.register(app)
    return app


__all__ = ["create_app"]
