"""Piccolo's SQLite engine, tuned for two app processes sharing one WAL database.

Piccolo opens a fresh aiosqlite connection (and thread) for every query outside a
transaction and for every transaction. The app processes call `start_connection_pool()`
at start-up; from then on connections are reused. Each connection runs in WAL mode with
`synchronous=NORMAL`: a commit no longer waits for fsync (a power cut can lose the last
transactions, never corrupt the file; an application crash loses nothing), and with
`secure_delete=ON`, so erased rows are overwritten rather than left in free pages.
"""

from __future__ import annotations

from typing import Any

import aiosqlite
from piccolo.engine.sqlite import SQLiteEngine, dict_factory

MAX_IDLE = 8


class _PooledConnection:
    """Looks like an aiosqlite connection; closing it returns it to the pool."""

    def __init__(self, connection: aiosqlite.Connection, engine: MutualSQLiteEngine) -> None:
        self._connection, self._engine = connection, engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    async def close(self) -> None:
        await self._engine.release(self._connection)


class MutualSQLiteEngine(SQLiteEngine):
    def __init__(self, path: str, **connection_kwargs: Any) -> None:
        super().__init__(path=path, **connection_kwargs)
        self._idle: list[aiosqlite.Connection] | None = None

    async def start_connection_pool(self, **_: Any) -> None:
        if self._idle is None:
            self._idle = []

    async def close_connection_pool(self) -> None:
        idle, self._idle = self._idle or [], None
        for connection in idle:
            await connection.close()

    async def _connect(self) -> aiosqlite.Connection:
        connection = await aiosqlite.connect(**self.connection_kwargs)
        connection.row_factory = dict_factory  # type: ignore[assignment]
        await connection.execute("PRAGMA foreign_keys = 1")
        await connection.execute("PRAGMA synchronous = NORMAL")
        # Deleted content is overwritten, so a shredded data key does not linger in free pages.
        await connection.execute("PRAGMA secure_delete = ON")
        return connection

    async def acquire(self) -> aiosqlite.Connection:
        if self._idle:
            return self._idle.pop()
        return await self._connect()

    async def release(self, connection: aiosqlite.Connection) -> None:
        if self._idle is not None and len(self._idle) < MAX_IDLE and not connection.in_transaction:
            self._idle.append(connection)
        else:
            await connection.close()

    async def get_connection(self) -> Any:  # used by transactions
        return _PooledConnection(await self.acquire(), self)

    async def _run_in_new_connection(self, query: str, args: list[Any] | None = None,
                                     query_type: str = "generic", table: Any = None) -> Any:
        connection = await self.acquire()
        try:
            async with connection.execute(query, args or []) as cursor:
                rows = await cursor.fetchall()
            if connection.in_transaction:  # autocommit mode: only a DML statement can leave one open
                await connection.commit()
            return rows
        finally:
            await self.release(connection)
