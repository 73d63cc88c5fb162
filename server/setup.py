"""Bringing a database up to date: WAL mode, Piccolo migrations, the audit head."""

from __future__ import annotations

import sqlite3

from server.settings import get_settings


def prepare_sqlite_file() -> None:
    """WAL lets the two app processes read while one writes; the mode is stored in the file."""
    settings = get_settings()
    if settings.is_postgres:
        return
    settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(settings.sqlite_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


async def migrate() -> None:
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from server.audit.chain import ensure_head

    prepare_sqlite_file()
    result = await run_forwards(app_name="all")
    if not result.success:
        raise SystemExit(f"migration failed: {result.message}")
    await ensure_head()


DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


async def postgres_answers(url: str, timeout: float = 3) -> bool:
    """True when a PostgreSQL server accepts a connection at `url`."""
    import asyncio

    import asyncpg

    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
    await conn.close()
    return True
