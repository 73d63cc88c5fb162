"""Server-side sessions of both faces: open, resume, rotate, list and end them; the actors they carry."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from server.actor import Actor
from server.audit.chain import Entry, append
from server.db import raw, write_transaction
from server.errors import SignInFailed
from server.identity import limits, session_cache
from server.identity.tables import (
    AuthChallenge,
    EmailToken,
    Session,
    SigninFailure,
)
from server.kernel import get_kernel
from server.settings import get_settings

GENERIC_FAILURE = "The sign-in details are not correct. Check them and try again."


STAGES = ("full", "mfa", "enrol")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def audit_security(actor: Actor, action: str, outcome: str, subjects: tuple[str, ...] = (),
                         fields: dict[str, str] | None = None) -> None:
    """An account-security event (sign-in, second factor, session, credential change)."""
    await append(actor, Entry(action=action, entity="session", purpose="account_security",
                              outcome=outcome, subjects=subjects, fields=fields or {}),
                 get_kernel().policies.version)


@dataclass(frozen=True)
class SignedIn:
    token: str
    actor: Actor
    stage: str = "full"
    """full, or the second factor the sign-in still waits for: mfa (enter a code) or enrol (set one up)."""


async def open_session(face: str, account_id: uuid.UUID, actor: Actor, *, method: str, device: str = "",
                       stage: str = "full", replaces: str | None = None, clear_keys: tuple[str, ...] = (),
                       subjects: tuple[str, ...] = (), give_back: limits.Attempt | None = None,
                       authenticated_at: dt.datetime | None | Literal["now"] = "now") -> SignedIn:
    """A new session with a new token (a sign-in never keeps an old token), atomically with the
    deletion of the session it `replaces`, the account's failure count and the audit event.
    `authenticated_at` is when the person proved who they are: now, or for single sign-on the
    provider's time (None: not known, so never a recent sign-in, ASVS 7.5.1). The right guess that
    opens it (`give_back`, counted before it was checked) stops counting in the same step.

    A session that waits for a second factor lives `pending_signin_minutes` and is never resumed
    as a signed-in session; `complete_signin` replaces it."""
    assert stage in STAGES
    token = secrets.token_urlsafe(32)
    now = _now()
    settings = get_settings()
    life = (dt.timedelta(hours=settings.session_absolute_hours) if stage == "full"
            else dt.timedelta(minutes=settings.pending_signin_minutes))
    async with write_transaction():
        if replaces:
            await Session.delete().where(Session.token_hash == token_hash(replaces))
            session_cache.invalidate()
        await Session.insert(Session(token_hash=token_hash(token), face=face, account_id=account_id,
                                     created_at=now, last_seen_at=now, expires_at=now + life,
                                     authenticated_at=now if authenticated_at == "now" else authenticated_at,
                                     handle=uuid.uuid4(), stage=stage, method=method[:32],
                                     device=device[:64]))
        for key in clear_keys:
            await limits.clear("signin", face, key)
        if give_back is not None:
            await limits.give_back(give_back)
        await purge_expired(now)
        if stage == "full":
            await audit_security(actor, "signin", "ok", subjects, {"method": method})
    return SignedIn(token, actor, stage)


async def purge_expired(now: dt.datetime) -> None:
    """Forget what has run out (sessions, ceremonies, emailed links, old failures): done at each sign-in,
    which is rare next to page views, so no scheduler is needed (retention class `session`)."""
    await Session.delete().where(Session.expires_at < now)
    await AuthChallenge.delete().where(AuthChallenge.expires_at < now)
    await EmailToken.delete().where(EmailToken.expires_at < now - limits.MEMORY)
    await SigninFailure.delete().where(SigninFailure.at < now - limits.MEMORY)


def anonymous_actor(face: str, request_id: str) -> Actor:
    return Actor(kind="anonymous", id="", face=face, request_id=request_id)


def staff_actor(account: dict, request_id: str) -> Actor:
    roles = frozenset(r.strip() for r in account["roles"].split(",") if r.strip())
    return Actor(kind="staff", id=str(account["id"]), face="backoffice", roles=roles,
                 display=account["username"], team=account.get("team"), request_id=request_id,
                 signed_in_at=account.get("signed_in_at"))


def customer_actor(account: dict, request_id: str) -> Actor:
    pid = account["person_id"]
    return Actor(kind="customer", id=str(account["id"]), face="portal", roles=frozenset({"customer"}),
                 person_id=pid if isinstance(pid, uuid.UUID) else uuid.UUID(str(pid)), request_id=request_id,
                 signed_in_at=account.get("signed_in_at"))


# Looked up by the token hash alone; `_refusal` applies the rest, to rows from the database and the cache alike.
_SESSION_QUERIES = {
    "backoffice": "SELECT s.token_hash, s.face, s.stage, s.last_seen_at, s.expires_at, "
                  "s.authenticated_at AS signed_in_at, a.active, a.id, a.username, a.roles, a.team "
                  "FROM identity_session s JOIN identity_staff_account a ON a.id = s.account_id "
                  "WHERE s.token_hash = {}",
    "portal": "SELECT s.token_hash, s.face, s.stage, s.last_seen_at, s.expires_at, "
              "s.authenticated_at AS signed_in_at, a.active, a.id, a.person_id "
              "FROM identity_session s JOIN identity_customer_account a ON a.id = s.account_id "
              "WHERE s.token_hash = {}",
}


def _refusal(session: dict[str, Any], face: str, now: dt.datetime) -> str | None:
    """Why this session row does not sign anyone in on `face` now: "expired" (delete it), "other" (a
    session of the other face, one still waiting for its second factor, or of a switched-off account),
    or None for a live session."""
    if session["face"] != face or session["stage"] != "full" or not session["active"]:
        return "other"
    idle_limit = dt.timedelta(minutes=get_settings().session_idle_minutes)
    if session["expires_at"] <= now or session["last_seen_at"] + idle_limit <= now:
        return "expired"
    return None


async def resume_session(face: str, token: str, request_id: str) -> Actor | None:
    """The actor of a live session, or None; idle and absolute timeouts end sessions here.

    One query per request, the session joined to its account, unless this process has the row in its
    session cache; a cached row gets every check a fresh one gets, and one the checks refuse is read
    again from the database, which decides (another process may have used the session since).
    """
    if not token:
        return None
    key, now = token_hash(token), _now()
    session = session_cache.cache.get(face, key)
    if session is None or _refusal(session, face, now) is not None:
        epoch = session_cache.cache.epoch
        rows = await raw(_SESSION_QUERIES[face], key)
        session = rows[0] if rows else None
        refusal = "other" if session is None else _refusal(session, face, now)
        if refusal is not None:
            session_cache.cache.forget(face, key)
            if refusal == "expired":
                await Session.delete().where(Session.token_hash == key)
            return None
        assert session is not None
        session_cache.cache.put(face, key, session, epoch)
    actor = staff_actor(session, request_id) if face == "backoffice" else customer_actor(session, request_id)
    if now - session["last_seen_at"] > dt.timedelta(minutes=1):
        # Touch at most once a minute: a read-mostly page view should not always write.
        await Session.update({Session.last_seen_at: now}).where(Session.token_hash == key)
        session_cache.cache.touch(face, key, now)
    return actor


async def sign_out(actor: Actor, token: str) -> None:
    async with write_transaction():
        await Session.delete().where(Session.token_hash == token_hash(token))
        session_cache.invalidate()
        await audit_security(actor, "signout", "ok")


async def forget_session(token: str) -> None:
    await Session.delete().where(Session.token_hash == token_hash(token))
    session_cache.invalidate()


async def rotate_session(actor: Actor, token: str, *, reauthenticated: bool = False) -> SignedIn:
    """A new token for the same session after a privilege or credential change (ASVS 7.2.4)."""
    rows = await Session.select().where(Session.token_hash == token_hash(token))
    if not rows:
        raise SignInFailed(GENERIC_FAILURE)
    new = secrets.token_urlsafe(32)
    method = "password" if rows[0]["method"] == "reset_link" else rows[0]["method"]
    changes: dict[Any, Any] = {Session.token_hash: token_hash(new), Session.method: method}
    if reauthenticated:
        changes[Session.authenticated_at] = _now()
    await Session.update(changes).where(Session.token_hash == token_hash(token))
    session_cache.invalidate()
    return SignedIn(new, actor)


@dataclass(frozen=True)
class SessionInfo:
    handle: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    method: str
    device: str
    current: bool


async def list_sessions(actor: Actor, current_token: str) -> list[SessionInfo]:
    """The signed-in account's live sessions on this face, most recently used first."""
    now, current = _now(), token_hash(current_token)
    rows = await Session.select().where(
        (Session.account_id == uuid.UUID(actor.id)) & (Session.face == actor.face) & (Session.stage == "full")
        & (Session.expires_at > now)).order_by(Session.last_seen_at, ascending=False)
    idle = dt.timedelta(minutes=get_settings().session_idle_minutes)
    return [SessionInfo(str(r["handle"]), r["created_at"], r["last_seen_at"], r["method"],
                        r["device"] or "Unknown browser", r["token_hash"] == current)
            for r in rows if r["last_seen_at"] + idle > now]


async def revoke_session(actor: Actor, handle: str, current_token: str = "") -> str | None:
    """End one of the account's own sessions: "current" or "other" for the one ended, None when there
    is no such session (of this account)."""
    try:
        wanted = uuid.UUID(handle)
    except ValueError:
        return None
    where = ((Session.handle == wanted) & (Session.account_id == uuid.UUID(actor.id))
             & (Session.face == actor.face))
    async with write_transaction():
        rows = await Session.select(Session.token_hash).where(where)
        if not rows:
            return None
        await Session.delete().where(where)
        session_cache.invalidate()
        await audit_security(actor, "session_revoke", "ok")
    return "current" if rows[0]["token_hash"] == token_hash(current_token) else "other"


async def revoke_other_sessions(actor: Actor, current_token: str) -> int:
    """End every session of the account on this face but the current one."""
    where = ((Session.account_id == uuid.UUID(actor.id)) & (Session.face == actor.face)
             & (Session.token_hash != token_hash(current_token)))
    async with write_transaction():
        count = await Session.count().where(where)
        await Session.delete().where(where)
        session_cache.invalidate()
        await audit_security(actor, "session_revoke_others", "ok", fields={"count": str(count)})
    return count


async def end_all_sessions(account_id: uuid.UUID | None = None) -> int:
    """An administrator ends every session of one account (any face), or of everyone."""
    where = Session.account_id == account_id if account_id is not None else Session.token_hash.is_not_null()
    async with write_transaction():
        count = await Session.count().where(where)
        await Session.delete().where(where)
        session_cache.invalidate()
    return count


async def revoke_all_sessions(account_id: uuid.UUID, face: str) -> None:
    """End every session of an account (after a credential reset or deactivation)."""
    await Session.delete().where((Session.account_id == account_id) & (Session.face == face))
    session_cache.invalidate()
