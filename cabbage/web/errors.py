"""How failures answer: JSON ``{"error": ...}`` under /api/, an error page elsewhere.

Cabbage errors map to HTTP statuses (unknown job 404, wrong state 409, bad input 400, database
down 503); the message is the error's own one line, escaped like any text on a page.
"""

from __future__ import annotations

import flask
import structlog
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from cabbage.exceptions import (
    CabbageError,
    ConfigurationError,
    DatabaseUnavailable,
    JobNotFound,
    JobStateError,
    SchemaError,
)

log = structlog.get_logger()

# Most specific first: JobNotFound is also a StoreError, SchemaError too.
HTTP_STATUS_OF = (
    (JobNotFound, 404),
    (JobStateError, 409),
    (ConfigurationError, 400),
    (DatabaseUnavailable, 503),
    (SchemaError, 503),
    (CabbageError, 500),
)


def is_api_request() -> bool:
    return flask.request.path.startswith("/api/")


def respond(status: int, message: str, headers: dict[str, str] | None = None) -> ResponseReturnValue:
    headers = dict(headers or {})
    if status == 401 and is_api_request():
        headers["WWW-Authenticate"] = 'Bearer realm="cabbage"'
    if is_api_request():
        return flask.jsonify(error=message), status, headers
    return flask.render_template("error.html", status=status, message=message), status, headers


def register(app: flask.Flask) -> None:
    @app.errorhandler(CabbageError)
    def cabbage_error(error: CabbageError) -> ResponseReturnValue:
        status = next(code for kind, code in HTTP_STATUS_OF if isinstance(error, kind))
        if status >= 500:
            log.error("web_request_failed", path=flask.request.path, error_type=type(error).__name__, error=str(error))
        return respond(status, str(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> ResponseReturnValue:
        kept = {name: value for name, value in error.get_headers() if name == "Retry-After"}  # 429, 503
        return respond(error.code or 500, error.description or error.name, kept)
