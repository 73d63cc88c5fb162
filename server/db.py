"""Database access helpers: the engine, short write transactions, schema migration."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from asyncpg.exceptions import UniqueViolationError
from piccolo.engine.base import Engine
from piccolo.engine.finder import engine_finder
from piccolo.engine.sqlite import SQLiteEngine, TransactionType
from piccolo.querystring import QueryString


def engine() -> Engine:
    found = engine_finder()
    if found is None:  # pragma: no cover - piccolo_conf always defines DB
        raise RuntimeError("no Piccolo engine configured; set PICCOLO_CONF=server.piccolo_conf")
    return found


def is_sqlite() -> bool:
    return isinstance(engine(), SQLiteEngine)


_WRITE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _process_write_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _WRITE_LOCKS.get(loop)
    if lock is None:
        lock = _WRITE_LOCKS[loop] = asyncio.Lock()
    return lock


_AFTER_COMMIT: ContextVar[list[Callable[[], None]] | None] = ContextVar("mutual_after_commit", default=None)


def after_commit(callback: Callable[[], None]) -> None:
    """Call `callback` once the write transaction open in this task has committed (not at all when it
    rolls back); at once when none is open."""
    pending = _AFTER_COMMIT.get()
    if pending is None or engine().current_transaction.get() is None:
        callback()
    else:
        pending.append(callback)


@contextlib.asynccontextmanager
async def write_transaction() -> AsyncIterator[Any]:
    """One short write transaction.

    On SQLite it starts with BEGIN IMMEDIATE, so the write lock is taken up
    front and two processes never deadlock upgrading a read lock. A transaction
    already open in this task is joined rather than nested.
    """
    db = engine()
    current = db.current_transaction.get()
    if current is not None:
        yield current
        return
    callbacks: list[Callable[[], None]] = []
    outer = _AFTER_COMMIT.set(callbacks)
    try:
        if isinstance(db, SQLiteEngine):
            # Writers of this process queue here rather than in SQLite's busy handler, whose
            # sleeps (up to 100 ms each) would otherwise dominate the tail latency.
            async with _process_write_lock(), db.transaction(transaction_type=TransactionType.immediate) as txn:
                yield txn
        else:
            async with db.transaction() as txn:
                yield txn
    finally:
        _AFTER_COMMIT.reset(outer)
    for callback in callbacks:
        callback()


def is_unique_violation(exc: BaseException) -> bool:
    """Whether a statement failed because a unique constraint already holds the value (SQLite's
    IntegrityError says so in its message; asyncpg has its own class)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(exc)
    return isinstance(exc, UniqueViolationError)


async def raw(sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement with positional `{}` placeholders (Piccolo's raw syntax)."""
    return await engine().run_querystring(QueryString(sql, *args))


async def insert_many(table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Bulk insert inside the current write transaction (executemany on the driver).

    Piccolo builds one object and one bound parameter list per row, which costs more than
    the encryption itself for bulk imports. The driver's executemany stores values exactly as
    Piccolo would: Piccolo registers its SQLite adapters globally, and asyncpg encodes natively.
    """
    if not rows:
        return
    txn = engine().current_transaction.get()
    if txn is None:
        raise RuntimeError("insert_many needs an open write_transaction()")
    names = ", ".join(columns)
    if is_sqlite():
        marks = ", ".join("?" for _ in columns)
    else:
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await txn.connection.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


async def flush_deleted_pages() -> None:
    """SQLite: fold the WAL into the database file and truncate it, so the old page images that
    still hold erased rows leave the disk now rather than at the next automatic checkpoint."""
    if is_sqlite():
        await raw("PRAGMA wal_checkpoint(TRUNCATE)")
