"""The session cache: every refusal of resume_session still happens on a cached row, a change made in
this process is seen by its very next lookup, and one made by another process within two polls."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.actor import Actor
from server.db import after_commit, raw, write_transaction
from server.identity import session_cache, sessions
from server.identity.accounts import create_staff, customer_account_id, remove_customer_accounts, set_staff_active
from server.identity.oidc.flow import _update_from_claims
from server.identity.service import (
    customer_actor,
    end_all_sessions,
    list_sessions,
    open_session,
    resume_session,
    revoke_other_sessions,
    revoke_session,
    set_password,
    sign_out,
    staff_actor,
    token_hash,
)
from server.identity.tables import Session, StaffAccount
from server.settings import get_settings
from tests.faces._client import make_customer
from tests.support import ERIKA

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "staff-password-for-tests"
WITHIN = 2 * session_cache.POLL_SECONDS
"""How soon a change written by another process must be seen."""


@pytest.fixture
async def local_only(db: None) -> AsyncIterator[session_cache.SessionCache]:
    """The cache trusted for a minute with no poller running: only this process's own invalidation
    can clear it, so a test that passes here does not lean on the poll."""
    cache = session_cache.cache
    cache.clear()
    cache.trust(60)
    yield cache
    cache.distrust()
    cache.clear()


@pytest.fixture
async def polled(db: None) -> AsyncIterator[session_cache.SessionCache]:
    """The cache with its poller running, as in an app process."""
    session_cache.start()
    deadline = time.monotonic() + 5
    while not _trusted() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert _trusted(), "the poller did not read the session generation"
    yield session_cache.cache
    await session_cache.stop()


def _trusted() -> bool:
    return session_cache.cache._trusted_until > time.monotonic()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The token hashes resume_session looked up in the database."""
    seen: list[str] = []
    real = sessions.raw

    async def counting(sql: str, *args: Any) -> list[dict[str, Any]]:
        if sql in sessions._SESSION_QUERIES.values():
            seen.append(args[0])
        return await real(sql, *args)

    monkeypatch.setattr(sessions, "raw", counting)
    return seen


async def _staff(username: str = "admin", roles: str = "admin") -> tuple[str, Actor]:
    account_id = await create_staff(username, PASSWORD, roles.split(","))
    actor = staff_actor({"id": account_id, "username": username, "roles": roles}, "test")
    signed = await open_session("backoffice", account_id, actor, method="password")
    return signed.token, actor


async def _cached_staff(lookups: list[str], username: str = "admin", roles: str = "admin") -> tuple[str, Actor]:
    """A staff session resumed twice, the second time from the cache."""
    token, actor = await _staff(username, roles)
    assert await resume_session("backoffice", token, "r1") is not None
    assert await resume_session("backoffice", token, "r2") is not None
    assert lookups.count(token_hash(token)) == 1, "the second lookup did not come from the cache"
    return token, actor


async def _gone_within(face: str, token: str, seconds: float) -> float:
    """Seconds until resume_session refuses `token`; fails when it still resumes after `seconds`."""
    start = time.monotonic()
    while await resume_session(face, token, "r") is not None:
        assert time.monotonic() - start < seconds, f"the session still resumed after {seconds} s"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


# --- what the cache holds -------------------------------------------------------------------------


async def test_a_second_lookup_is_served_from_the_cache_which_never_holds_the_token(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await _cached_staff(lookups)
    assert local_only.keys() == [("backoffice", token_hash(token))]
    held = repr(local_only.keys()) + repr(local_only.rows()) + repr(local_only._entries)
    assert token not in held
    assert all(token not in str(value) for row in local_only.rows() for value in row.values())


async def test_the_cache_keeps_at_most_ten_thousand_sessions_and_drops_the_least_recently_used(
        local_only: session_cache.SessionCache) -> None:
    rows = [{"n": i} for i in range(session_cache.MAX_ENTRIES + 1)]
    local_only.put("portal", "first", rows[0], local_only.epoch)
    local_only.put("portal", "second", rows[1], local_only.epoch)
    assert local_only.get("portal", "first") == rows[0]  # now the second is the least recently used
    for i, row in enumerate(rows[2:], start=2):
        local_only.put("portal", f"h{i}", row, local_only.epoch)
    assert len(local_only) == session_cache.MAX_ENTRIES
    assert local_only.get("portal", "second") is None
    assert local_only.get("portal", "first") == rows[0]


async def test_a_lookup_that_read_before_a_clear_stores_nothing(local_only: session_cache.SessionCache) -> None:
    epoch = local_only.epoch
    local_only.clear()
    local_only.put("portal", "h", {"n": 1}, epoch)
    assert len(local_only) == 0


async def test_entries_live_at_most_the_configured_seconds_and_zero_turns_the_cache_off(
        local_only: session_cache.SessionCache, monkeypatch: pytest.MonkeyPatch) -> None:
    local_only.put("portal", "h", {"n": 1}, local_only.epoch)
    assert local_only.get("portal", "h") == {"n": 1}
    stored, row = local_only._entries[("portal", "h")]
    local_only._entries[("portal", "h")] = (stored - get_settings().session_cache_seconds, row)  # stored earlier
    assert local_only.get("portal", "h") is None, "an entry outlived its lifetime"
    monkeypatch.setenv("MUTUAL_SESSION_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    try:
        local_only.trust(60)
        local_only.put("portal", "h", {"n": 1}, local_only.epoch)
        assert len(local_only) == 0
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


async def test_without_a_poller_reading_the_generation_no_entry_is_used(db: None, lookups: list[str]) -> None:
    session_cache.cache.clear()
    session_cache.cache.distrust()
    token, _ = await _staff()
    for _ in range(3):
        assert await resume_session("backoffice", token, "r") is not None
    assert lookups.count(token_hash(token)) == 3


# --- every refusal still happens on a cached row -------------------------------------------------


async def test_an_idle_session_is_refused_and_deleted_on_a_cache_hit(
        local_only: session_cache.SessionCache, lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = await _cached_staff(lookups)
    idle = dt.timedelta(minutes=get_settings().session_idle_minutes)
    later = sessions._now() + idle + dt.timedelta(seconds=1)
    monkeypatch.setattr(sessions, "_now", lambda: later)
    assert await resume_session("backoffice", token, "r") is None
    assert not await Session.exists().where(Session.token_hash == token_hash(token))
    assert local_only.keys() == []


async def test_a_session_past_its_absolute_end_is_refused_on_a_cache_hit(
        local_only: session_cache.SessionCache, lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = await _staff()
    soon = sessions._now() + dt.timedelta(minutes=2)
    await Session.update({Session.expires_at: soon}).where(Session.token_hash == token_hash(token))
    assert await resume_session("backoffice", token, "r1") is not None
    assert await resume_session("backoffice", token, "r2") is not None
    assert lookups.count(token_hash(token)) == 1
    later = soon + dt.timedelta(seconds=1)  # well inside the idle limit
    monkeypatch.setattr(sessions, "_now", lambda: later)
    assert await resume_session("backoffice", token, "r3") is None
    assert not await Session.exists().where(Session.token_hash == token_hash(token))


async def test_a_cached_session_is_touched_once_a_minute_and_the_entry_follows(
        local_only: session_cache.SessionCache, lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = await _cached_staff(lookups)
    later = sessions._now() + dt.timedelta(minutes=2)
    monkeypatch.setattr(sessions, "_now", lambda: later)
    assert await resume_session("backoffice", token, "r") is not None
    stored = await Session.select(Session.last_seen_at).where(Session.token_hash == token_hash(token))
    assert stored[0]["last_seen_at"] == later
    assert local_only.rows()[0]["last_seen_at"] == later
    assert lookups.count(token_hash(token)) == 1, "the touch read the session again"


async def test_a_cached_session_is_not_resumed_on_the_other_face(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await _cached_staff(lookups)
    assert await resume_session("portal", token, "r") is None


# --- this process: the very next lookup ----------------------------------------------------------


async def test_sign_out_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await _cached_staff(lookups)
    await sign_out(actor, token)
    assert await resume_session("backoffice", token, "r") is None


async def test_revoking_a_session_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await _cached_staff(lookups)
    other = (await open_session("backoffice", uuid.UUID(actor.id), actor, method="password")).token
    assert await resume_session("backoffice", other, "r") is not None
    assert await revoke_other_sessions(actor, token) == 1
    assert await resume_session("backoffice", other, "r") is None
    [current] = await list_sessions(actor, token)
    assert await revoke_session(actor, current.handle, token) == "current"
    assert await resume_session("backoffice", token, "r") is None


async def test_ending_every_session_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await _cached_staff(lookups)
    await end_all_sessions(uuid.UUID(actor.id))
    assert await resume_session("backoffice", token, "r") is None


async def test_a_password_change_in_this_process_retires_the_old_token_at_once(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await _cached_staff(lookups)
    rotated = await set_password(actor, token, PASSWORD, "a few words in a row")
    assert await resume_session("backoffice", token, "r") is None
    assert await resume_session("backoffice", rotated.token, "r") is not None


async def test_deactivating_an_account_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await _cached_staff(lookups)
    await set_staff_active("admin", False)
    assert await resume_session("backoffice", token, "r") is None


async def test_a_role_change_in_this_process_shows_in_the_next_actor(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await _cached_staff(lookups, roles="sales")
    account = (await StaffAccount.select().where(StaffAccount.username == "admin"))[0]
    async with write_transaction():  # as at an SSO sign-in, which opens the session in the same transaction
        await _update_from_claims(account, {}, get_settings(), ["compliance"], "r")
    actor = await resume_session("backoffice", token, "r")
    assert actor is not None and actor.roles == frozenset({"compliance"})


async def test_removing_a_customer_account_ends_its_cached_portal_session(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    customer = await make_customer(ERIKA)
    account_id = await customer_account_id(customer.email)
    assert account_id is not None
    actor = customer_actor({"id": account_id, "person_id": customer.person_id}, "r")
    token = (await open_session("portal", account_id, actor, method="password")).token
    assert await resume_session("portal", token, "r") is not None
    assert await resume_session("portal", token, "r") is not None
    assert lookups.count(token_hash(token)) == 1
    await remove_customer_accounts(customer.person_id)
    assert await resume_session("portal", token, "r") is None


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
    token, _ = await _cached_staff(lookups)
    await asyncio.to_thread(_mutual, *command)
    await _gone_within("backoffice", token, WITHIN)


async def test_a_raw_delete_from_another_connection_is_seen_within_two_polls(
        polled: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await _cached_staff(lookups)
    await _another_connection("DELETE FROM identity_session WHERE token_hash = ?", token_hash(token))
    await _gone_within("backoffice", token, WITHIN)


async def test_a_raw_role_change_from_another_connection_is_seen_within_two_polls(
        polled: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await _cached_staff(lookups, roles="sales")
    await _another_connection("UPDATE identity_staff_account SET roles = ? WHERE username = 'admin'", "compliance")
    start = time.monotonic()
    while (actor := await resume_session("backoffice", token, "r")) is not None and "sales" in actor.roles:
        assert time.monotonic() - start < WITHIN, "the old roles were still served"
        await asyncio.sleep(0.005)
    assert actor is not None and actor.roles == frozenset({"compliance"})


async def test_a_touch_from_another_connection_does_not_clear_the_cache(
        polled: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await _cached_staff(lookups)
    await _another_connection("UPDATE identity_session SET last_seen_at = last_seen_at WHERE token_hash = ?",
                              token_hash(token))
    await asyncio.sleep(WITHIN)
    assert await resume_session("backoffice", token, "r") is not None
    assert lookups.count(token_hash(token)) == 1, "a change the triggers do not watch cleared the cache"


async def test_the_generation_moves_on_every_watched_change_and_not_on_the_touch(db: None) -> None:
    async def generation() -> int | None:
        rows = await raw(session_cache.GENERATION_QUERY)
        return rows[0]["value"] if rows else None

    token, actor = await _staff()
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
        while not _trusted() and time.monotonic() < deadline:  # the first poll (and the LISTEN) done
            await asyncio.sleep(0.01)
        session_cache.cache.trust(60)
        token, _ = await _cached_staff(lookups)
        await _another_connection("DELETE FROM identity_session WHERE token_hash = ?", token_hash(token))
        await _gone_within("backoffice", token, WITHIN)
    finally:
        await poller.stop()
