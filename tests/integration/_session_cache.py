"""Fixtures and helpers of the session cache tests: the cache with or without its poller, the
database lookups resume_session makes, and cached staff sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.actor import Actor
from server.identity import session_cache, sessions
from server.identity.accounts import create_staff
from server.identity.service import (
    open_session,
    resume_session,
    staff_actor,
    token_hash,
)

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
    while not trusted() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert trusted(), "the poller did not read the session generation"
    yield session_cache.cache
    await session_cache.stop()


def trusted() -> bool:
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


async def staff_session(username: str = "admin", roles: str = "admin") -> tuple[str, Actor]:
    account_id = await create_staff(username, PASSWORD, roles.split(","))
    actor = staff_actor({"id": account_id, "username": username, "roles": roles}, "test")
    signed = await open_session("backoffice", account_id, actor, method="password")
    return signed.token, actor


async def cached_staff(lookups: list[str], username: str = "admin", roles: str = "admin") -> tuple[str, Actor]:
    """A staff session resumed twice, the second time from the cache."""
    token, actor = await staff_session(username, roles)
    assert await resume_session("backoffice", token, "r1") is not None
    assert await resume_session("backoffice", token, "r2") is not None
    assert lookups.count(token_hash(token)) == 1, "the second lookup did not come from the cache"
    return token, actor


async def gone_within(face: str, token: str, seconds: float) -> float:
    """Seconds until resume_session refuses `token`; fails when it still resumes after `seconds`."""
    start = time.monotonic()
    while await resume_session(face, token, "r") is not None:
        assert time.monotonic() - start < seconds, f"the session still resumed after {seconds} s"
        await asyncio.sleep(0.005)
    return time.monotonic() - start
