"""The session cache: every refusal of resume_session still happens on a cached row, and a change made in
this process is seen by its very next lookup (tests/integration/test_session_cache_processes.py: by others)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from server.db import write_transaction
from server.identity import session_cache, sessions
from server.identity.accounts import customer_account_id, remove_customer_accounts, set_staff_active
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
    token_hash,
)
from server.identity.tables import Session, StaffAccount
from server.settings import get_settings
from tests.faces._client import make_customer
from tests.integration._session_cache import cached_staff, staff_session
from tests.support import ERIKA

PASSWORD = "staff-password-for-tests"


# --- what the cache holds -------------------------------------------------------------------------


async def test_a_second_lookup_is_served_from_the_cache_which_never_holds_the_token(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await cached_staff(lookups)
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
    token, _ = await staff_session()
    for _ in range(3):
        assert await resume_session("backoffice", token, "r") is not None
    assert lookups.count(token_hash(token)) == 3


# --- every refusal still happens on a cached row -------------------------------------------------


async def test_an_idle_session_is_refused_and_deleted_on_a_cache_hit(
        local_only: session_cache.SessionCache, lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = await cached_staff(lookups)
    idle = dt.timedelta(minutes=get_settings().session_idle_minutes)
    later = sessions._now() + idle + dt.timedelta(seconds=1)
    monkeypatch.setattr(sessions, "_now", lambda: later)
    assert await resume_session("backoffice", token, "r") is None
    assert not await Session.exists().where(Session.token_hash == token_hash(token))
    assert local_only.keys() == []


async def test_a_session_past_its_absolute_end_is_refused_on_a_cache_hit(
        local_only: session_cache.SessionCache, lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token, _ = await staff_session()
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
    token, _ = await cached_staff(lookups)
    later = sessions._now() + dt.timedelta(minutes=2)
    monkeypatch.setattr(sessions, "_now", lambda: later)
    assert await resume_session("backoffice", token, "r") is not None
    stored = await Session.select(Session.last_seen_at).where(Session.token_hash == token_hash(token))
    assert stored[0]["last_seen_at"] == later
    assert local_only.rows()[0]["last_seen_at"] == later
    assert lookups.count(token_hash(token)) == 1, "the touch read the session again"


async def test_a_cached_session_is_not_resumed_on_the_other_face(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await cached_staff(lookups)
    assert await resume_session("portal", token, "r") is None


# --- this process: the very next lookup ----------------------------------------------------------


async def test_sign_out_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await cached_staff(lookups)
    await sign_out(actor, token)
    assert await resume_session("backoffice", token, "r") is None


async def test_revoking_a_session_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await cached_staff(lookups)
    other = (await open_session("backoffice", uuid.UUID(actor.id), actor, method="password")).token
    assert await resume_session("backoffice", other, "r") is not None
    assert await revoke_other_sessions(actor, token) == 1
    assert await resume_session("backoffice", other, "r") is None
    [current] = await list_sessions(actor, token)
    assert await revoke_session(actor, current.handle, token) == "current"
    assert await resume_session("backoffice", token, "r") is None


async def test_ending_every_session_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await cached_staff(lookups)
    await end_all_sessions(uuid.UUID(actor.id))
    assert await resume_session("backoffice", token, "r") is None


async def test_a_password_change_in_this_process_retires_the_old_token_at_once(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, actor = await cached_staff(lookups)
    rotated = await set_password(actor, token, PASSWORD, "a few words in a row")
    assert await resume_session("backoffice", token, "r") is None
    assert await resume_session("backoffice", rotated.token, "r") is not None


async def test_deactivating_an_account_in_this_process_takes_effect_on_the_next_lookup(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await cached_staff(lookups)
    await set_staff_active("admin", False)
    assert await resume_session("backoffice", token, "r") is None


async def test_a_role_change_in_this_process_shows_in_the_next_actor(
        local_only: session_cache.SessionCache, lookups: list[str]) -> None:
    token, _ = await cached_staff(lookups, roles="sales")
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
