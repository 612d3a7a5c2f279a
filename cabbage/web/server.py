"""``cabbage web``: serves the admin app with werkzeug's threaded server until stopped.

Without a token the app is read-only and may only listen on a loopback address: an open,
unauthenticated admin on the network is refused before anything binds. The process title
never carries the command line, which may hold the DSN and its password.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import threading
import time
import urllib.parse
from types import FrameType

import setproctitle
import structlog
from werkzeug.serving import WSGIRequestHandler, make_server

from cabbage import dsn as dsn_module
from cabbage.exceptions import ConfigurationError
from cabbage.web import create_app
from cabbage.web.database import DEFAULT_POOL_SIZE, pool_of

log = structlog.get_logger()

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AccessLog(WSGIRequestHandler):
    """werkzeug's request handler with one structlog event per request: ``web_request_served``.

    The line has the method, the path without its query string, the status and the duration;
    never a header (``Authorization``), a body (the ``token`` field) or a query value.
    """

    started: float | None = None

    def parse_request(self) -> bool:
        self.started = time.monotonic()  # the request line is read: the request begins
        return super().parse_request()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", None)  # unset when the request line could not be read
        log.info(
            "web_request_served",
            method=self.command,
            path=urllib.parse.urlsplit(path).path if path else None,
            status=int(code) if str(code).isdigit() else None,
            duration_ms=round((time.monotonic() - self.started) * 1000, 1) if self.started else None,
            remote_addr=self.client_address[0] if self.client_address else None,
        )

    def log_error(self, format: str, *args: object) -> None:
        # A refused request line (400, 414) is logged by log_request with its status; werkzeug's
        # own text would repeat the raw request line, query string included.
        pass


def serve(
    dsn: str, host: str, port: int, token: str | None, trust_proxy: bool = False, pool_size: int = DEFAULT_POOL_SIZE
) -> None:
    """Serves until SIGINT or SIGTERM; refuses a non-loopback ``host`` when ``token`` is None."""
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the admin website on {host} without a token: set CABBAGE_WEB_TOKEN, "
            "or listen on 127.0.0.1 (read-only)"
        )
    app = create_app(dsn, token=token, trust_proxy=trust_proxy, pool_size=pool_size)
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    listening = listen(address, port)
    with listening:  # werkzeug serves a duplicate of it
        server = make_server(address, port, app, threaded=True, request_handler=AccessLog, fd=listening.fileno())
    url = f"http://{f'[{address}]' if ':' in address else address}:{server.port}/"
    setproctitle.setproctitle(f"cabbage web: {url}{' (read-only)' if token is None else ''}")

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "web_server_started",
        url=url,
        read_only=token is None,
        database=dsn_module.describe(dsn),
        pool_size=pool_size,
    )
    server.serve_forever()
    pool_of(app).close()
    log.info("web_server_stopped")


def listen(address: str, port: int) -> socket.socket:
    """A socket listening on ``address``:``port``, or one ConfigurationError line saying why not.

    Bound here rather than by werkzeug, which prints a bare reason and exits on a bad address.
    """
    where = f"{address}:{port}"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        (_, _, _, _, socket_address), *_ = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM)
        return socket.create_server(socket_address, family=family)
    except (UnicodeError, ValueError, socket.gaierror) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a host name"
        raise ConfigurationError(
            f"cannot listen on {where}: no address of this machine has that name ({reason}); "
            "pass --host an address or name of this machine, such as 127.0.0.1 or 0.0.0.0"
        ) from None
    except OSError as exc:
        # os.strerror: create_server's own text repeats the address.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigurationError(f"cannot listen on {where}: {reason}; {_remedy_for(exc.errno)}") from None


def _remedy_for(error_number: int | None) -> str:
    if error_number == errno.EADDRINUSE:
        return "another program listens on that port: stop it, or pass another --port"
    if error_number == errno.EACCES:
        return "ports below 1024 need privileges: pass --port 1024 or above"
    if error_number == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine: pass --host 127.0.0.1, 0.0.0.0 or one of its addresses"
    return "pass another --host or --port"
