"""argon2id hashing off the event loop, with bounded concurrency."""

from __future__ import annotations

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
