"""argon2id hashing off the event loop, with bounded concurrency."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2-cffi's RFC 9106 "low memory" profile: argon2id, m=64 MiB, t=3, p=4,
# above OWASP's minimum (m=19 MiB, t=2, p=1).
_HASHER = PasswordHasher()
# Each hash takes 64 MiB and tens of milliseconds: two at a time per process.
_LIMIT = anyio.CapacityLimiter(2)
# Verified when an account does not exist, so both paths cost the same.
_DUMMY = _HASHER.hash("mutual-timing-equaliser")


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_HASHER.hash, password, limiter=_LIMIT)


async def verify_password(stored: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _HASHER.verify(stored or _DUMMY, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(check, limiter=_LIMIT)


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)


MIN_LENGTH = 8
MAX_LENGTH = 128
_COMMON = Path(__file__).with_name("common-passwords.txt.gz")


@functools.cache
def _common_passwords() -> frozenset[str]:
    with gzip.open(_COMMON, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None. Length and the common-password list only: no
    composition rules (NIST SP 800-63B, ASVS 6.2)."""
    if len(password) < MIN_LENGTH:
        return f"use at least {MIN_LENGTH} characters; a few words in a row make a good password"
    if len(password) > MAX_LENGTH:
        return f"use at most {MAX_LENGTH} characters"
    if password.strip().lower() in _common_passwords():
        return "this password is on the list of the most common passwords; choose another one"
    return None
