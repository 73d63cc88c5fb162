"""Fixtures for the face tests: argon2 runs once per password, so the suite stays fast."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from server.identity import accounts, passwords
from server.identity import service as identity

_HASHES: dict[str, str] = {}
_VERDICTS: dict[tuple[str | None, str], bool] = {}


@pytest.fixture(autouse=True)
def argon2_once_per_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashing and verifying are deterministic for a given hash and password, so their results are
    reused: every account still holds a real argon2 hash and every sign-in a real argon2 verdict, but
    the dozens of accounts and sign-ins the matrix makes no longer cost 120 ms each."""
    hash_once = _hash_once(passwords.hash_password)
    monkeypatch.setattr(identity, "hash_password", hash_once)
    monkeypatch.setattr(accounts, "hash_password", hash_once)
    monkeypatch.setattr(identity, "verify_password", _verify_once(passwords.verify_password))


def _hash_once(hash_password: Callable[[str], Awaitable[str]]) -> Callable[[str], Awaitable[str]]:
    async def hash_once(password: str) -> str:
        if password not in _HASHES:
            _HASHES[password] = await hash_password(password)
        return _HASHES[password]

    return hash_once


def _verify_once(
    verify_password: Callable[[str | None, str], Awaitable[bool]],
) -> Callable[[str | None, str], Awaitable[bool]]:
    async def verify_once(stored: str | None, password: str) -> bool:
        if (stored, password) not in _VERDICTS:
            _VERDICTS[stored, password] = await verify_password(stored, password)
        return _VERDICTS[stored, password]

    return verify_once
