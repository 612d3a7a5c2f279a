"""``cabbage web``: serves the admin app with werkzeug's threaded server until stopped.

Without a token the app is read-only and may only listen on a loopback address: an open,
unauthenticated admin on the network is refused before anything binds.
"""

from __future__ import annotations

import ipaddress
import signal
import threading
from types import FrameType

import structlog
from werkzeug.serving import make_server

from cabbage import dsn as dsn_module
from cabbage.exceptions import ConfigurationError
from cabbage.web import create_app

log = structlog.get_logger()

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(dsn: str, host: str, port: int, token: str | None) -> None:
    """Serves until SIGINT or SIGTERM; refuses a non-loopback ``host`` when ``token`` is None."""
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the admin website on {host} without a token: set CABBAGE_WEB_TOKEN, "
            "or listen on 127.0.0.1 (read-only)"
        )
    app = create_app(dsn, token=token)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "web_server_started",
        url=f"http://{host}:{server.port}/",
        read_only=token is None,
        database=dsn_module.describe(dsn),
    )
    server.serve_forever()
    log.info("web_server_stopped")
