"""The headers every answer carries: a strict Content-Security-Policy, no framing, no type
sniffing, and no caching of what the database said.

The pages use no script, no inline style and nothing from another site (the chart is SVG drawn
on the server), so the policy allows only this site's stylesheet. Only /static/ may be cached:
a job page or an API answer may hold arguments, and a shared cache must not keep them.
"""

from __future__ import annotations

import flask

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def add_security_headers(response: flask.Response) -> flask.Response:
    response.headers.update(SECURITY_HEADERS)
    if flask.request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def register(app: flask.Flask) -> None:
    app.after_request(add_security_headers)
