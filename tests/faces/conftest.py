"""Fixtures for the face tests: accounts hashed once per password so the suite stays fast."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from server.identity import passwords
from server.identity import service as identity


@pytest.fixture(autouse=True)
def hash_each_password_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reuse one real argon2 hash per password: every account still verifies through argon2 at
    sign-in, but creating a dozen accounts per test no longer costs a dozen 64 MiB hashes."""
    monkeypatch.setattr(identity, "hash_password", _cached(passwords.hash_password))


_HASHES: dict[str, str] = {}


def _cached(hash_password: Callable[[str], Coroutine[Any, Any, str]]) -> Callable[[str], Coroutine[Any, Any, str]]:
    async def cached(password: str) -> str:
        if password not in _HASHES:
            _HASHES[password] = await hash_password(password)
        return _HASHES[password]

    return cached
