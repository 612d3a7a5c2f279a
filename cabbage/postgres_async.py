"""The PostgreSQL store's asynchronous half: defers awaited from an asyncio app without blocking
its event loop, on psycopg2's asynchronous connections.

psycopg2 stays the one driver. Its asynchronous mode (``async_=True``) sends a statement and
returns; the connection's socket then tells when to read or write, which ``loop.add_reader`` /
``add_writer`` wait for, so the loop runs other coroutines meanwhile. Each event loop gets a small
pool of such sessions (an asynchronous connection runs one statement at a time): concurrent
defers use up to ``size`` sessions, the rest wait for one. Why this route rather than a thread
pool or psycopg 3 is in docs/performance.md. Like postgres.py, this module is where psycopg2
errors become cabbage errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Mapping

import psycopg2
import psycopg2.extensions

from cabbage import dsn as dsn_module
from cabbage.exceptions import DatabaseUnavailable, StoreError
from cabbage.queueing_locks import QUEUEING_LOCK_INDEX, QueueingLockRace

DEFAULT_POOL_SIZE = 4
UNIQUE_VIOLATION = "23505"


async def _wait(connection: psycopg2.extensions.connection) -> None:
    """Until the connection's pending work (connecting, a statement) is done, without blocking."""
    loop = asyncio.get_running_loop()
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        waiting = loop.create_future()
        fd = connection.fileno()
        if state == psycopg2.extensions.POLL_READ:
            loop.add_reader(fd, waiting.set_result, None)
            try:
                await waiting
            finally:
                loop.remove_reader(fd)
        elif state == psycopg2.extensions.POLL_WRITE:
            loop.add_writer(fd, waiting.set_result, None)
            try:
                await waiting
            finally:
                loop.remove_writer(fd)
        else:  # pragma: no cover - psycopg2 documents no other state
            raise StoreError(f"unexpected psycopg2 poll state {state}")


class AsyncSession:
    """One asynchronous connection: statements one at a time, rows back as tuples."""

    def __init__(self, connection: psycopg2.extensions.connection, dsn: str) -> None:
        self.connection = connection
        self.dsn = dsn

    @classmethod
    async def open(cls, dsn: str, application_name: str) -> "AsyncSession":
        options = dsn_module.connection_options(dsn, application_name=application_name)
        try:
            connection = psycopg2.connect(dsn, async_=True, **options)
            await _wait(connection)
        except psycopg2.Error as exc:
            raise dsn_module.connect_error(exc, dsn) from None
        return cls(connection, dsn)

    async def fetch_all(self, statement: str, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(statement, parameters)
                await _wait(self.connection)
                return cursor.fetchall() if cursor.description else []
        except psycopg2.Error as exc:
            if exc.pgcode == UNIQUE_VIOLATION and getattr(exc.diag, "constraint_name", None) == QUEUEING_LOCK_INDEX:
                # A defer that raced another for its key: run again.
                raise QueueingLockRace() from None
            reason = dsn_module.reason_of(exc, self.dsn)
            lost_by_libpq = exc.pgcode is None and type(exc) in (psycopg2.DatabaseError, psycopg2.OperationalError, psycopg2.InterfaceError)
            if self.is_broken or lost_by_libpq or (exc.pgcode or "").startswith(("08", "57P")):
                self.close()
                raise DatabaseUnavailable(f"lost the connection to {dsn_module.describe(self.dsn)}: {reason}") from None
            raise StoreError(f"the database refused a cabbage query: {reason}") from None

    @property
    def is_broken(self) -> bool:
        return bool(self.connection.closed)

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.connection.close()


class AsyncPool:
    """Up to ``size`` sessions for one event loop; a broken session is dropped, not lent again."""

    def __init__(self, dsn: str, application_name: str, size: int = DEFAULT_POOL_SIZE) -> None:
        self.dsn, self.application_name, self.size = dsn, application_name, size
        self._idle: list[AsyncSession] = []
        self._opened = 0
        self._returned = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        session = await self._take()
        try:
            yield session
        finally:
            await self._give_back(session)

    async def _take(self) -> AsyncSession:
        async with self._returned:
            while not self._idle and self._opened >= self.size:
                await self._returned.wait()
            if self._idle:
                return self._idle.pop()
            self._opened += 1
        try:
            return await AsyncSession.open(self.dsn, self.application_name)
        except BaseException:
            async with self._returned:
                self._opened -= 1
                self._returned.notify()
            raise

    async def _give_back(self, session: AsyncSession) -> None:
        async with self._returned:
            if session.is_broken:
                self._opened -= 1
            else:
                self._idle.append(session)
            self._returned.notify()

    def close(self) -> None:
        for session in self._idle:
            session.close()
        self._idle.clear()
