"""The web server's database connections: a bounded pool, one connection lent to each request.

At most ``size`` connections are open, whatever the number of requests at once (werkzeug
serves each from its own thread); a request that finds every one busy waits up to ``wait_s``
for one, then answers 503 (``PoolExhausted``). Connections are opened on first need and kept
for the next request; one the database ended (a restart, ``pg_terminate_backend``) is
discarded when it is taken back or lent out, never handed to a request.
"""

from __future__ import annotations

import select
import threading
from typing import Any

import flask

from cabbage.admin import Admin
from cabbage.exceptions import ConfigurationError, DatabaseUnavailable

DEFAULT_POOL_SIZE = 4
DEFAULT_POOL_WAIT_S = 5.0
POOL_KEY = "cabbage_connection_pool"


class PoolExhausted(DatabaseUnavailable):
    """Every database connection of the web server stayed busy while the request waited."""


class ConnectionPool:
    """Up to ``size`` Admin connections to ``dsn``, lent one at a time; thread-safe."""

    def __init__(self, dsn: str, size: int = DEFAULT_POOL_SIZE, wait_s: float = DEFAULT_POOL_WAIT_S) -> None:
        if size < 1:
            raise ConfigurationError(f"the connection pool size must be at least 1, got {size}")
        if wait_s < 0:
            raise ConfigurationError(f"the connection pool wait must be >= 0 s, got {wait_s}")
        self.dsn = dsn
        self.size = size
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        """A live connection, lent until ``release``; PoolExhausted after ``wait_s`` without one."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise PoolExhausted(
                f"all {self.size} database connections of this server stayed busy for {self.wait_s:g} s: "
                "try again, or start cabbage web with a larger --pool-size"
            )
        try:
            while True:
                with self._lock:
                    connection = self._idle.pop() if self._idle else None
                if connection is None:
                    return Admin.open_connection(self.dsn)
                if is_live(connection):
                    return connection
                connection.close()  # ended by the database while it was idle
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: Any) -> None:
        """Takes a lent connection back: kept for the next request if it still works, else closed."""
        try:
            if is_live(connection):
                with self._lock:
                    self._idle.append(connection)
            else:
                connection.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Closes the idle connections (lent ones are closed when they come back)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def is_live(connection: Any) -> bool:
    """Open, and with nothing to read: an idle session the server ended has sent its last words
    (a FATAL message, the end of the stream), which poll() would not notice."""
    return not connection.closed and not select.select([connection], [], [], 0)[0]


def register(app: flask.Flask, size: int, wait_s: float) -> None:
    app.extensions[POOL_KEY] = ConnectionPool(app.config["CABBAGE_DSN"], size, wait_s)
    app.teardown_appcontext(release_admin)


def pool_of(app: flask.Flask) -> ConnectionPool:
    return app.extensions[POOL_KEY]


def get_admin() -> Admin:
    """This request's Admin, over a connection of the pool, lent until the request ends."""
    if "cabbage_admin" not in flask.g:
        pool = pool_of(flask.current_app)
        flask.g.cabbage_admin = Admin(pool.acquire(), pool.dsn)
    return flask.g.cabbage_admin


def release_admin(error: BaseException | None = None) -> None:
    admin = flask.g.pop("cabbage_admin", None)
    if admin is not None:
        pool_of(flask.current_app).release(admin.connection)
