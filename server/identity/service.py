"""Sign-in for both faces, server-side sessions and sign-in rate limiting."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from server.actor import Actor
from server.audit.chain import Entry, append
from server.db import raw, write_transaction
from server.errors import Invalid, SignInFailed, TooManyAttempts
from server.identity.passwords import hash_password, needs_rehash, verify_password
from server.identity.tables import CustomerAccount, Session, SigninFailure, StaffAccount
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault import blind_index, normalise_email

GENERIC_FAILURE = "The sign-in details are not correct. Check them and try again."
TOO_MANY = "Too many sign-in attempts. Wait {minutes} minutes, then try again."


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _limit_key(kind: str, value: str) -> str:
    """A keyed hash, so neither account names nor client addresses are stored."""
    _, key = get_kernel().keys.index_key("ratelimit")
    return hmac.new(key, f"{kind}|{value}".encode(), hashlib.sha256).hexdigest()


async def _audit(actor: Actor, action: str, outcome: str, subjects: tuple[str, ...] = ()) -> None:
    await append(actor, Entry(action=action, entity="session", purpose="account_security",
                              outcome=outcome, subjects=subjects), get_kernel().policies.version)


async def _check_limits(face: str, keys: list[str]) -> None:
    settings = get_settings()
    since = _now() - dt.timedelta(minutes=settings.signin_window_minutes)
    for key in keys:
        count = await SigninFailure.count().where(
            (SigninFailure.key == key) & (SigninFailure.face == face) & (SigninFailure.at > since)
        )
        if count >= settings.signin_max_failures:
            raise TooManyAttempts(TOO_MANY.format(minutes=settings.signin_window_minutes))


async def _record_failure(face: str, keys: list[str]) -> None:
    now = _now()
    await SigninFailure.insert(*[SigninFailure(id=uuid.uuid4(), face=face, key=k, at=now) for k in keys])


@dataclass(frozen=True)
class SignedIn:
    token: str
    actor: Actor


async def _finish(face: str, kind: str, account_id: uuid.UUID, keys: list[str], actor: Actor,
                  subjects: tuple[str, ...] = ()) -> SignedIn:
    """Create the session, clear the account's failures and record the sign-in, atomically."""
    token = secrets.token_urlsafe(32)
    now = _now()
    settings = get_settings()
    async with write_transaction():
        await Session.insert(Session(token_hash=_token_hash(token), face=face, account_id=account_id,
                                     created_at=now, last_seen_at=now,
                                     expires_at=now + dt.timedelta(hours=settings.session_absolute_hours)))
        await SigninFailure.delete().where(SigninFailure.key == keys[0])
        await _audit(actor, "signin", "ok", subjects)
    return SignedIn(token, actor)


async def _fail(face: str, keys: list[str], anonymous: Actor) -> SignInFailed:
    async with write_transaction():
        await _record_failure(face, keys)
        await _audit(anonymous, "signin", "failed")
    return SignInFailed(GENERIC_FAILURE)


def _anonymous(face: str, request_id: str) -> Actor:
    return Actor(kind="anonymous", id="", face=face, request_id=request_id)


async def staff_sign_in(username: str, password: str, client: str, request_id: str) -> SignedIn:
    username = username.strip().casefold()
    if not username or not password:
        raise Invalid({"username": "enter your user name and password"})
    keys = [_limit_key("staff", username), _limit_key("ip", client)]
    await _check_limits("backoffice", keys)
    rows = await StaffAccount.select().where((StaffAccount.username == username) & (StaffAccount.active == True))  # noqa: E712
    account = rows[0] if rows else None
    if not await verify_password(account["password_hash"] if account else None, password) or account is None:
        raise await _fail("backoffice", keys, _anonymous("backoffice", request_id))
    actor = staff_actor(account, request_id)
    if needs_rehash(account["password_hash"]):
        await StaffAccount.update({StaffAccount.password_hash: await hash_password(password)}).where(
            StaffAccount.id == account["id"])
    return await _finish("backoffice", "staff", account["id"], keys, actor)


async def customer_sign_in(email: str, password: str, client: str, request_id: str) -> SignedIn:
    if not email.strip() or not password:
        raise Invalid({"email": "enter your email address and password"})
    index = blind_index(get_kernel().keys, "signin", normalise_email(email))
    keys = [_limit_key("customer", index), _limit_key("ip", client)]
    await _check_limits("portal", keys)
    rows = await CustomerAccount.select().where(
        (CustomerAccount.email_index == index) & (CustomerAccount.active == True))  # noqa: E712
    account = rows[0] if rows else None
    if not await verify_password(account["password_hash"] if account else None, password) or account is None:
        raise await _fail("portal", keys, _anonymous("portal", request_id))
    actor = customer_actor(account, request_id)
    if needs_rehash(account["password_hash"]):
        await CustomerAccount.update({CustomerAccount.password_hash: await hash_password(password)}).where(
            CustomerAccount.id == account["id"])
    return await _finish("portal", "customer", account["id"], keys, actor)


def staff_actor(account: dict, request_id: str) -> Actor:
    roles = frozenset(r.strip() for r in account["roles"].split(",") if r.strip())
    return Actor(kind="staff", id=str(account["id"]), face="backoffice", roles=roles,
                 display=account["username"], team=account.get("team"), request_id=request_id)


def customer_actor(account: dict, request_id: str) -> Actor:
    pid = account["person_id"]
    return Actor(kind="customer", id=str(account["id"]), face="portal", roles=frozenset({"customer"}),
                 person_id=pid if isinstance(pid, uuid.UUID) else uuid.UUID(str(pid)), request_id=request_id)


_SESSION_QUERIES = {
    "backoffice": "SELECT s.token_hash, s.last_seen_at, s.expires_at, a.id, a.username, a.roles, a.team "
                  "FROM identity_session s JOIN identity_staff_account a ON a.id = s.account_id "
                  "WHERE s.token_hash = {} AND s.face = 'backoffice' AND a.active",
    "portal": "SELECT s.token_hash, s.last_seen_at, s.expires_at, a.id, a.person_id "
              "FROM identity_session s JOIN identity_customer_account a ON a.id = s.account_id "
              "WHERE s.token_hash = {} AND s.face = 'portal' AND a.active",
}


async def resume_session(face: str, token: str, request_id: str) -> Actor | None:
    """The actor of a live session, or None; idle and absolute timeouts end sessions here.

    One query per request: the session joined to its (active) account.
    """
    if not token:
        return None
    rows = await raw(_SESSION_QUERIES[face], _token_hash(token))
    if not rows:
        return None
    session, now = rows[0], _now()
    idle_limit = dt.timedelta(minutes=get_settings().session_idle_minutes)
    if session["expires_at"] <= now or session["last_seen_at"] + idle_limit <= now:
        await Session.delete().where(Session.token_hash == session["token_hash"])
        return None
    actor = staff_actor(session, request_id) if face == "backoffice" else customer_actor(session, request_id)
    if now - session["last_seen_at"] > dt.timedelta(minutes=1):
        # Touch at most once a minute: a read-mostly page view should not always write.
        await Session.update({Session.last_seen_at: now}).where(Session.token_hash == session["token_hash"])
    return actor


async def sign_out(actor: Actor, token: str) -> None:
    async with write_transaction():
        await Session.delete().where(Session.token_hash == _token_hash(token))
        await _audit(actor, "signout", "ok")


async def has_staff_accounts() -> bool:
    return await StaffAccount.exists()


async def create_staff(username: str, password: str, roles: list[str], team: str | None = None) -> uuid.UUID:
    known = get_kernel().policies.roles - {"customer"}
    bad = [r for r in roles if r not in known]
    if bad:
        raise Invalid({"roles": f"unknown role(s) {', '.join(bad)}; known: {', '.join(sorted(known))}"})
    account_id = uuid.uuid4()
    await StaffAccount.insert(StaffAccount(id=account_id, username=username.strip().casefold(),
                                           roles=",".join(roles), team=team,
                                           password_hash=await hash_password(password),
                                           created_at=_now()))
    return account_id


async def create_customer_account(person_id: uuid.UUID, email: str, password: str) -> uuid.UUID:
    if len(password) < 8:
        raise Invalid({"password": "use at least 8 characters"})
    account_id = uuid.uuid4()
    await CustomerAccount.insert(CustomerAccount(
        id=account_id, person_id=person_id,
        email_index=blind_index(get_kernel().keys, "signin", normalise_email(email)),
        password_hash=await hash_password(password), created_at=_now()))
    return account_id


async def remove_customer_accounts(person_id: uuid.UUID) -> None:
    """Delete a person's portal account and its sessions (part of erasure)."""
    accounts = await CustomerAccount.select(CustomerAccount.id).where(CustomerAccount.person_id == person_id)
    ids = [a["id"] for a in accounts]
    if ids:
        await Session.delete().where(Session.account_id.is_in(ids))
        await CustomerAccount.delete().where(CustomerAccount.id.is_in(ids))
