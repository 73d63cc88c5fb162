"""Database access helpers: the engine, short write transactions, schema migration."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

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
    if isinstance(db, SQLiteEngine):
        async with db.transaction(transaction_type=TransactionType.immediate) as txn:
            yield txn
    else:
        async with db.transaction() as txn:
            yield txn


async def raw(sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement with positional `{}` placeholders (Piccolo's raw syntax)."""
    return await engine().run_querystring(QueryString(sql, *args))
