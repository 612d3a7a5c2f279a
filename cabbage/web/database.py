"""One admin connection per request, opened on first use and closed when the request ends."""

from __future__ import annotations

import flask

from cabbage.admin import Admin


def get_admin() -> Admin:
    if "cabbage_admin" not in flask.g:
        flask.g.cabbage_admin = Admin.connect(flask.current_app.config["CABBAGE_DSN"])
    return flask.g.cabbage_admin


def close_admin(error: BaseException | None = None) -> None:
    admin = flask.g.pop("cabbage_admin", None)
    if admin is not None:
        admin.close()
