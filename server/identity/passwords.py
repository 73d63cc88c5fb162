"""argon2id hashing off the event loop, with bounded concurrency."""

from __future__ import annotations

import functools
import gzip
import os
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
            # An account without a password stores "": the dummy hash is checked (same cost), never passes.
            return _HASHER.verify(stored or _DUMMY, password) and bool(stored)
        except (VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(check, limiter=_LIMIT)


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)


# Lookup secrets (recovery codes: about 59 random bits) are stored with a salted password hash (ASVS
# 6.5.2), with OWASP's minimum argon2id profile: enough for random secrets, and ten of them are made
# at once.
_SECRET_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


async def hash_lookup_secrets(values: list[str]) -> list[str]:
    """The salted argon2id hashes of several random secrets, two at a time off the event loop."""
    hashes = [""] * len(values)

    async def one(index: int) -> None:
        hashes[index] = await anyio.to_thread.run_sync(_SECRET_HASHER.hash, values[index], limiter=_LIMIT)

    async with anyio.create_task_group() as group:
        for index in range(len(values)):
            group.start_soon(one, index)
    return hashes


async def verify_lookup_secret(stored: str, secret: str) -> bool:
    def check() -> bool:
        try:
            return _SECRET_HASHER.verify(stored, secret)
        except (VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(check, limiter=_LIMIT)


MIN_LENGTH = 8
MAX_LENGTH = 128
_COMMON = Path(__file__).with_name("common-passwords.txt.gz")


@functools.cache
def _common_passwords() -> frozenset[str]:
    with gzip.open(_COMMON, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


# Context-specific words (ASVS 6.1.2, 6.2.11): the product, its parts and the words of this trade.
# Operators add their own (the business's name, its products, its town) in MUTUAL_PASSWORD_CONTEXT_WORDS.
CONTEXT_WORDS = frozenset({"mutual", "mutualcrm", "crm", "backoffice", "portal", "customer", "customers",
                           "staff", "admin", "administrator", "sales", "support", "compliance", "password",
                           "passwort", "kunde", "kunden", "welcome", "willkommen"})


def _context_words() -> frozenset[str]:
    extra = os.environ.get("MUTUAL_PASSWORD_CONTEXT_WORDS", "")
    return CONTEXT_WORDS | {w.strip().lower() for w in extra.split(",") if w.strip()}


def password_problem(password: str, *, personal: tuple[str, ...] = ()) -> str | None:
    """Why a new password is refused, or None. Length, the common-password list and context words
    only: no composition rules (NIST SP 800-63B, ASVS 6.2). `personal`: the account's own words
    (a member of staff's user name), refused inside a password."""
    if len(password) < MIN_LENGTH:
        return f"use at least {MIN_LENGTH} characters; a few words in a row make a good password"
    if len(password) > MAX_LENGTH:
        return f"use at most {MAX_LENGTH} characters"
    if password.strip().lower() in _common_passwords():
        return "this password is on the list of the most common passwords; choose another one"
    core = "".join(ch for ch in password.lower() if ch.isalpha())
    own = {w.lower() for w in personal if len(w) >= 4}
    if core in _context_words() or any(w in password.lower() for w in own):
        return ("this password is built on a word anyone could guess here (your name, the product or the business);"
                " choose another one")
    return None
