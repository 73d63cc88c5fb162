"""Rate limits with exponential back-off, per account and per client address, for every way in:
password sign-in, second factors, emailed links, password resets and sign-ups.

Each failure (or, for mail-sending actions, each request) is one row keyed by a keyed hash of the
account or the client address, never the value itself. Up to `signin_max_failures` in a day are
free; the next one locks the key for `signin_window_minutes`, and each further one, once the lock
is over, doubles the wait (capped at a day; an account's wide key, which strangers can fill from
many addresses, at `WIDE_CAP`).

A guess is counted before it is checked (`take`): the check of the count and the row that counts
this attempt are one serialised write (BEGIN IMMEDIATE on SQLite, an advisory lock per key on
PostgreSQL), so parallel guesses cannot all pass a check that none of them has been counted in.
A right guess then gives its rows back (`give_back`); a wrong one leaves them (`failed`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import uuid
from dataclasses import dataclass

from piccolo.columns.combination import Or, Where

from server.actor import Actor
from server.audit.chain import Entry, append
from server.db import is_sqlite, raw, write_transaction
from server.errors import TooManyAttempts
from server.identity.tables import SigninFailure
from server.kernel import get_kernel
from server.settings import get_settings

MEMORY = dt.timedelta(days=1)
CAP = dt.timedelta(days=1)
MESSAGES = {
    "signin": "Too many sign-in attempts. Wait {minutes} minutes, then try again.",
    "mfa": "Too many wrong codes. Wait {minutes} minutes, then try again.",
    "email_link": "Too many emails asked for. Wait {minutes} minutes, then ask again.",
    "reset": "Too many password resets asked for. Wait {minutes} minutes, then ask again.",
    "signup": "Too many sign-ups from here. Wait {minutes} minutes, then try again.",
    "sso": "Too many failed single sign-ins from here. Wait {minutes} minutes, then try again.",
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def limit_key(kind: str, value: str) -> str:
    """A keyed hash, so neither account names nor client addresses are stored."""
    _, key = get_kernel().keys.purpose_key("ratelimit", "limit-key")
    return hmac.new(key, f"{kind}|{value}".encode(), hashlib.sha256).hexdigest()


# An account's failures from anywhere lock it only after this many times the free attempts: a stranger
# who knows a user name should not lock its owner out with a handful of guesses (ASVS 6.1.1), while
# the same guesses from one client address lock that address and that account-from-that-address.
WIDE_FACTOR = 4
WIDE = "w:"
# The longest a named account stays locked by failures from anywhere: a burst from many addresses
# must not lock its owner out for a day (the addresses themselves stay locked for longer).
WIDE_CAP = dt.timedelta(hours=1)
STAFF_MFA = "staff-mfa"  # the label of staff second-factor attempts (account: the account id)


def account_keys(label: str, account: str, client: str) -> list[str]:
    """The keys of an attempt on one account: the account from this client address (locks after the
    free attempts), the client address (any account), and the account from anywhere (a wide key:
    locks after WIDE_FACTOR times as many)."""
    return [limit_key(label, f"{account}|{client}"), limit_key("ip", client), wide_key(label, account)]


def wide_key(label: str, account: str) -> str:
    return WIDE + limit_key(label, account)[: 64 - len(WIDE)]


def lock_for(failures: int, key: str = "") -> dt.timedelta:
    """How long a key with this many recent failures waits after its last one."""
    settings = get_settings()
    free = settings.signin_max_failures * (WIDE_FACTOR if key.startswith(WIDE) else 1)
    over = failures - free
    if over < 0:
        return dt.timedelta(0)
    cap = WIDE_CAP if key.startswith(WIDE) else CAP
    return min(cap, dt.timedelta(minutes=settings.signin_window_minutes) * (2 ** min(over, 16)))


async def check(kind: str, face: str, keys: list[str]) -> None:
    """Raise TooManyAttempts when any key is locked; says how long to wait, never which key."""
    now = _now()
    wait = dt.timedelta(0)
    for key in keys:
        rows = await SigninFailure.select(SigninFailure.at).where(
            (SigninFailure.key == key) & (SigninFailure.face == face) & (SigninFailure.kind == kind)
            & (SigninFailure.at > now - MEMORY)
        ).order_by(SigninFailure.at, ascending=False)
        lock = lock_for(len(rows), key)
        # No lock, no wait: a row recorded by a concurrent request after `now` must not count as one.
        if rows and lock > dt.timedelta(0):
            wait = max(wait, rows[0]["at"] + lock - now)
    if wait > dt.timedelta(0):
        raise TooManyAttempts(MESSAGES[kind].format(minutes=math.ceil(wait.total_seconds() / 60)))


@dataclass(frozen=True)
class Attempt:
    """A guess counted before it was checked: its rows, to give back if it turns out right."""

    kind: str
    face: str
    keys: tuple[str, ...]
    rows: tuple[uuid.UUID, ...]


async def _serialise(keys: list[str]) -> None:
    """Make concurrent takes of the same keys wait for each other until their transaction ends. SQLite's
    BEGIN IMMEDIATE already serialises every writer; PostgreSQL takes a transaction advisory lock per key
    (in sorted order, so two takes never wait for each other in a cycle)."""
    if is_sqlite():
        return
    for key in sorted(set(keys)):
        await raw("SELECT pg_advisory_xact_lock(hashtextextended({}, 0))", key)


async def _insert(kind: str, face: str, keys: list[str]) -> tuple[uuid.UUID, ...]:
    now = _now()
    account = next((k for k in keys if k.startswith(WIDE)), None)
    rows = [SigninFailure(id=uuid.uuid4(), face=face, key=k, at=now, kind=kind, account=account) for k in keys]
    await SigninFailure.insert(*rows)
    return tuple(r.id for r in rows)


async def take(kind: str, face: str, keys: list[str]) -> Attempt:
    """Count one guess against every key, unless one is locked (TooManyAttempts, nothing counted): the
    check and the count are one serialised write, so of any number of parallel guesses only as many
    as are free get past this line. Call before verifying the guess."""
    async with write_transaction():
        await _serialise(keys)
        await check(kind, face, keys)
        rows = await _insert(kind, face, keys)
    return Attempt(kind, face, tuple(keys), rows)


async def give_back(attempt: Attempt) -> None:
    """The guess was right: it does not count as a failure (`clear` forgets the account's earlier ones)."""
    await SigninFailure.delete().where(SigninFailure.id.is_in(list(attempt.rows)))


async def failed(attempt: Attempt) -> None:
    """The guess was wrong: its rows stay; a lock it started is recorded."""
    await _note_lock(attempt.kind, attempt.face, list(attempt.keys))


async def record(kind: str, face: str, keys: list[str]) -> None:
    """Count one failure (or one mail sent) against each key. Every row of an attempt on an account
    names the account's wide key, so `unlock` can find them (the client-address keys too)."""
    await _insert(kind, face, keys)
    await _note_lock(kind, face, keys)


async def _note_lock(kind: str, face: str, keys: list[str]) -> None:
    # A lock is recorded when it starts, once (not each refused attempt: those would flood the log).
    # The actor is anonymous: the event does not say whose account or which address was locked.
    now = _now()
    for key in keys:
        count = await SigninFailure.count().where(
            (SigninFailure.key == key) & (SigninFailure.face == face) & (SigninFailure.kind == kind)
            & (SigninFailure.at > now - MEMORY))
        lock = lock_for(count, key)
        if lock > dt.timedelta(0):
            await append(Actor(kind="anonymous", id="", face=face),
                         Entry(action=f"{kind}_locked", entity="session", purpose="account_security",
                               outcome="denied", fields={"minutes": str(math.ceil(lock.total_seconds() / 60))}),
                         get_kernel().policies.version)
            break


async def unlock(face: str, accounts: list[tuple[str, str]], keys: tuple[str, ...] = ()) -> int:
    """Lift every lock of one account (an administrator's decision): forget the attempts on it, given as
    (label, account) pairs of `account_keys`, from any address, and the failures of further `keys`.
    Returns how many attempts were forgotten."""
    tags = [wide_key(label, account) for label, account in accounts]
    where: Where | Or = SigninFailure.account.is_in(tags)
    if keys:
        where = where | SigninFailure.key.is_in(list(keys))
    forgotten = await SigninFailure.delete().where((SigninFailure.face == face) & where).returning(
        SigninFailure.id)
    return len(forgotten)


async def clear(kind: str, face: str, key: str) -> None:
    """Forget an account's failures after it succeeded (never the client address's key)."""
    await SigninFailure.delete().where(
        (SigninFailure.key == key) & (SigninFailure.face == face) & (SigninFailure.kind == kind))
