"""The session cache and other processes: a change one makes (a child process, a second connection) is seen
within two polls of the session generation, on PostgreSQL at once through LISTEN; what moves the generation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from server.db import after_commit, raw, write_transaction
from server.identity import session_cache, sessions
from server.identity.service import resume_session, token_hash
from server.identity.tables import Session, StaffAccount
from server.settings import get_settings
from tests.integration._session_cache import WITHIN, cached_staff, gone_within, staff_session, trusted

REPO = Path(__file__).resolve().parents[2]


# --- another process: within two polls ------------------------------------------------------------


def _mutual(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


async def _another_connection(sql: str, *args: Any) -> None:
    """One statement on a connection of its own, committed, outside Piccolo's engine and pool."""
    settings = get_settings()
    if settings.is_postgres:
        import asyncpg

        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(sql.replace("?", "$1"), *args)
        finally:
            await conn.close()
    else:
        import sqlite3

        with sqlite3.connect(settings.sqlite_path) as conn:
            conn.execute(sql, args)
        conn.close()


@pytest.mark.parametrize("command", [("staff", "sign-out", "admin"), ("staff", "disable", "admin")],
                         ids=["sign-out", "disable"])
async def test_a_child_process_ending_sessions_is_seen_within_two_polls(
        polled: session_cache.SessionCache, lookups: list[str], command: tuple[str, ...]) -> None:
    token, _ = await cached_staff(lookups)
    await asyncio.to_thread(_mutual, *command)
    await gone_within("backoffice", token, WITHIN)


async def test_a_raw_delete_from_another_connection_is_seen_within_two_polls(
        polled: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await cached_staff(lookups)
    await _another_connection("DELETE FROM identity_session WHERE token_hash = ?", token_hash(token))
    await gone_within("backoffice", token, WITHIN)


async def test_a_raw_role_change_from_another_connection_is_seen_within_two_polls(
        polled: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await cached_staff(lookups, roles="sales")
    await _another_connection("UPDATE identity_staff_account SET roles = ? WHERE username = 'admin'", "compliance")
    start = time.monotonic()
    while (actor := await resume_session("backoffice", token, "r")) is not None and "sales" in actor.roles:
        assert time.monotonic() - start < WITHIN, "the old roles were still served"
        await asyncio.sleep(0.005)
    assert actor is not None and actor.roles == frozenset({"compliance"})


async def test_a_touch_from_another_connection_does_not_clear_the_cache(
        polled: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await cached_staff(lookups)
    await _another_connection("UPDATE identity_session SET last_seen_at = last_seen_at WHERE token_hash = ?",
                              token_hash(token))
    await asyncio.sleep(WITHIN)
    assert await resume_session("backoffice", token, "r") is not None
    assert lookups.count(token_hash(token)) == 1, "a change the triggers do not watch cleared the cache"


async def test_the_generation_moves_on_every_watched_change_and_not_on_the_touch(db: None) -> None:
    async def generation() -> int | None:
        rows = await raw(session_cache.GENERATION_QUERY)
        return rows[0]["value"] if rows else None

    token, actor = await staff_session()
    before = await generation()
    await Session.update({Session.last_seen_at: sessions._now()}).where(Session.token_hash == token_hash(token))
    assert await generation() == before, "the touch moved the generation"
    await StaffAccount.update({StaffAccount.team: "north"}).where(StaffAccount.username == "admin")
    after_team = await generation()
    assert after_team != before
    await StaffAccount.update({StaffAccount.team: "north"}).where(StaffAccount.username == "admin")
    assert await generation() == after_team, "an update that changed nothing moved the generation"
    await Session.update({Session.stage: "mfa"}).where(Session.token_hash == token_hash(token))
    assert await generation() != after_team


async def test_after_commit_runs_once_the_outermost_write_transaction_committed_and_never_on_rollback(
        db: None) -> None:
    calls: list[str] = []
    async with write_transaction():
        async with write_transaction():  # joined, not nested: the commit is the outer one's
            after_commit(lambda: calls.append("committed"))
        assert calls == []
    assert calls == ["committed"]
    with pytest.raises(RuntimeError):
        async with write_transaction():
            after_commit(lambda: calls.append("rolled back"))
            raise RuntimeError("rollback")
    assert calls == ["committed"]
    after_commit(lambda: calls.append("no transaction"))
    assert calls == ["committed", "no transaction"]


async def test_on_postgresql_the_notification_clears_the_cache_before_the_next_poll(
        db: None, lookups: list[str]) -> None:
    if not get_settings().is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    poller = session_cache.GenerationPoller(session_cache.cache, interval=3600)
    poller.start()
    try:
        deadline = time.monotonic() + 5
        while not trusted() and time.monotonic() < deadline:  # the first poll (and the LISTEN) done
            await asyncio.sleep(0.01)
        session_cache.cache.trust(60)
        token, _ = await cached_staff(lookups)
        await _another_connection("DELETE FROM identity_session WHERE token_hash = ?", token_hash(token))
        await gone_within("backoffice", token, WITHIN)
    finally:
        await poller.stop()
