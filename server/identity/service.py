"""Sign-in for both faces, server-side sessions and sign-in rate limiting."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from server.actor import Actor, system_actor
from server.audit.chain import Entry, append
from server.db import raw, write_transaction
from server.errors import Invalid, SignInFailed
from server.identity import limits
from server.identity.passwords import hash_password, needs_rehash, password_problem, verify_password
from server.identity.tables import (
    AuthChallenge,
    CustomerAccount,
    EmailToken,
    Passkey,
    Session,
    SigninFailure,
    StaffAccount,
)
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault import blind_index, normalise_email

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


async def record_failure(face: str, keys: list[str], anonymous: Actor, kind: str = "signin",
                         attempt: limits.Attempt | None = None) -> SignInFailed:
    """A wrong guess: counted now, or (`attempt`) already counted before it was checked by `limits.take`."""
    async with write_transaction():
        if attempt is None:
            await limits.record(kind, face, keys)
        else:
            await limits.failed(attempt)
        await audit_security(anonymous, "signin" if kind == "signin" else f"signin_{kind}", "failed")
    return SignInFailed(GENERIC_FAILURE)



def anonymous_actor(face: str, request_id: str) -> Actor:
    return Actor(kind="anonymous", id="", face=face, request_id=request_id)



async def staff_sign_in(username: str, password: str, client: str, request_id: str,
                        device: str = "", replaces: str | None = None) -> SignedIn:
    """Check a staff password. The session it opens waits for the second factor when the account has
    one (stage mfa) or when staff must have one and this account has none yet (stage enrol)."""
    username = username.strip().casefold()
    if not username or not password:
        raise Invalid({"username": "enter your user name and password"})
    keys = limits.account_keys("staff", username, client)
    attempt = await limits.take("signin", "backoffice", keys)
    rows = await StaffAccount.select().where((StaffAccount.username == username) & (StaffAccount.active == True))  # noqa: E712
    account = rows[0] if rows else None
    if not await verify_password(account["password_hash"] if account else None, password) or account is None:
        raise await record_failure("backoffice", keys, anonymous_actor("backoffice", request_id), attempt=attempt)
    actor = staff_actor(account, request_id)
    if needs_rehash(account["password_hash"]):
        await StaffAccount.update({StaffAccount.password_hash: await hash_password(password)}).where(
            StaffAccount.id == account["id"])
    stage = "full"
    if account["totp_secret"]:
        stage = "mfa"
    elif get_settings().staff_mfa == "required":
        stage = "enrol"
    return await open_session("backoffice", account["id"], actor, method="password", device=device,
                              stage=stage, clear_keys=(keys[0], keys[2]), replaces=replaces, give_back=attempt)


class NotVerified(Exception):
    """The password was right, but the customer has not confirmed the email address yet."""

    def __init__(self, account_id: uuid.UUID) -> None:
        super().__init__("Confirm your email address first: we have sent you a new link.")
        self.account_id = account_id


async def customer_sign_in(email: str, password: str, client: str, request_id: str,
                           device: str = "", replaces: str | None = None) -> SignedIn:
    if not email.strip() or not password:
        raise Invalid({"email": "enter your email address and password"})
    index = blind_index(get_kernel().keys, "signin", normalise_email(email))
    keys = limits.account_keys("customer", index, client)
    attempt = await limits.take("signin", "portal", keys)
    rows = await CustomerAccount.select().where(
        (CustomerAccount.email_index == index) & (CustomerAccount.active == True))  # noqa: E712
    account = rows[0] if rows else None
    if not await verify_password(account["password_hash"] if account else None, password) or account is None:
        raise await record_failure("portal", keys, anonymous_actor("portal", request_id), attempt=attempt)
    if account["verified_at"] is None:
        await limits.give_back(attempt)  # the password was right: not a failure, whatever happens next
        raise NotVerified(account["id"])
    actor = customer_actor(account, request_id)
    if needs_rehash(account["password_hash"]):
        await CustomerAccount.update({CustomerAccount.password_hash: await hash_password(password)}).where(
            CustomerAccount.id == account["id"])
    return await open_session("portal", account["id"], actor, method="password", device=device,
                              clear_keys=(keys[0], keys[2]), replaces=replaces, give_back=attempt)


@dataclass(frozen=True)
class Pending:
    """A password-checked staff sign-in that waits for its second factor."""

    token: str
    stage: str
    method: str
    device: str
    account: dict
    authenticated_at: dt.datetime | None = None
    """When the first factor was proven (for single sign-on, at the provider; None: not known)."""


async def pending_signin(token: str) -> Pending | None:
    """The backoffice sign-in waiting for a second factor behind this cookie token, if it is live."""
    if not token:
        return None
    rows = await Session.select().where((Session.token_hash == token_hash(token))
                                        & (Session.face == "backoffice") & (Session.stage != "full"))
    if not rows or rows[0]["expires_at"] <= _now():
        return None
    accounts = await StaffAccount.select().where((StaffAccount.id == rows[0]["account_id"])
                                                 & (StaffAccount.active == True))  # noqa: E712
    if not accounts:
        return None
    return Pending(token, rows[0]["stage"], rows[0]["method"], rows[0]["device"], accounts[0],
                   rows[0]["authenticated_at"])


async def complete_signin(pending: Pending, factor: str, request_id: str) -> SignedIn:
    """The second factor passed: the waiting session is replaced by a signed-in one (a new token). Its
    sign-in counts from the first factor, the older of the two: an old sign-in at an identity provider
    plus a fresh code is no recent sign-in (ASVS 7.5.1)."""
    actor = staff_actor(pending.account, request_id)
    return await open_session("backoffice", pending.account["id"], actor,
                              method=f"{pending.method}+{factor}", device=pending.device,
                              replaces=pending.token, authenticated_at=pending.authenticated_at)


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


_SESSION_QUERIES = {
    "backoffice": "SELECT s.token_hash, s.last_seen_at, s.expires_at, s.authenticated_at AS signed_in_at, "
                  "a.id, a.username, a.roles, a.team "
                  "FROM identity_session s JOIN identity_staff_account a ON a.id = s.account_id "
                  "WHERE s.token_hash = {} AND s.face = 'backoffice' AND s.stage = 'full' AND a.active",
    "portal": "SELECT s.token_hash, s.last_seen_at, s.expires_at, s.authenticated_at AS signed_in_at, "
              "a.id, a.person_id "
              "FROM identity_session s JOIN identity_customer_account a ON a.id = s.account_id "
              "WHERE s.token_hash = {} AND s.face = 'portal' AND s.stage = 'full' AND a.active",
}


async def resume_session(face: str, token: str, request_id: str) -> Actor | None:
    """The actor of a live session, or None; idle and absolute timeouts end sessions here.

    One query per request: the session joined to its (active) account.
    """
    if not token:
        return None
    rows = await raw(_SESSION_QUERIES[face], token_hash(token))
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
        await Session.delete().where(Session.token_hash == token_hash(token))
        await audit_security(actor, "signout", "ok")


async def forget_session(token: str) -> None:
    await Session.delete().where(Session.token_hash == token_hash(token))


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


async def create_customer_account(person_id: uuid.UUID, email: str, password: str = "", *,
                                  verified: bool = True) -> uuid.UUID:
    """A portal account for a person. Without a password the customer signs in by emailed link or
    passkey; `verified=False` for self-service sign-ups until the emailed link is followed."""
    if password and (problem := password_problem(password)):
        raise Invalid({"password": problem})
    account_id = uuid.uuid4()
    now = _now()
    await CustomerAccount.insert(CustomerAccount(
        id=account_id, person_id=person_id,
        email_index=blind_index(get_kernel().keys, "signin", normalise_email(email)),
        password_hash=await hash_password(password) if password else "", created_at=now,
        verified_at=now if verified else None))
    return account_id


def signin_email_index(email: str) -> str:
    return blind_index(get_kernel().keys, "signin", normalise_email(email))


async def set_password(actor: Actor, current_token: str, current: str, new: str) -> SignedIn:
    """Change (or, when there is none yet, set) the signed-in account's password. The current
    password is asked for when there is one; the session is rotated and the change audited."""
    table = StaffAccount if actor.kind == "staff" else CustomerAccount
    rows = await table.select(table.password_hash).where(table.id == uuid.UUID(actor.id))
    if not rows:
        raise SignInFailed(GENERIC_FAILURE)
    stored = rows[0]["password_hash"]
    if stored and not await _just_reset(current_token):
        # Whoever holds a session must not guess the password here faster than at the sign-in form.
        keys = [current_password_key(actor.id)]
        attempt = await limits.take("signin", actor.face, keys)
        if not await verify_password(stored, current):
            async with write_transaction():
                await limits.failed(attempt)
            raise Invalid({"current": "the current password is not correct"})
        await limits.give_back(attempt)
    if problem := password_problem(new, personal=(actor.display,) if actor.kind == "staff" else ()):
        raise Invalid({"password": problem})
    new_hash = await hash_password(new)
    async with write_transaction():
        await table.update({table.password_hash: new_hash}).where(table.id == uuid.UUID(actor.id))
        await audit_security(actor, "password_change", "ok")
    # For a customer, proving the current password (or a fresh reset link) is a whole new sign-in: the
    # session may then end the others (ASVS 7.5.2) without signing in yet again. For staff it is one
    # factor of two, so it does not renew the sign-in (their change needed a recent one anyway).
    return await rotate_session(actor, current_token, reauthenticated=actor.kind != "staff")


async def _just_reset(token: str) -> bool:
    """A session opened by an emailed reset link within its lifetime may set a password without the
    old one (that is the point of a reset)."""
    rows = await Session.select(Session.method, Session.created_at).where(Session.token_hash == token_hash(token))
    limit = dt.timedelta(minutes=get_settings().email_link_minutes)
    return bool(rows) and rows[0]["method"] == "reset_link" and rows[0]["created_at"] > _now() - limit


async def has_password(actor: Actor) -> bool:
    table = StaffAccount if actor.kind == "staff" else CustomerAccount
    rows = await table.select(table.password_hash).where(table.id == uuid.UUID(actor.id))
    return bool(rows and rows[0]["password_hash"])


async def password_needs_current(actor: Actor, token: str) -> bool:
    """Whether the password form must ask for the current password."""
    table = StaffAccount if actor.kind == "staff" else CustomerAccount
    rows = await table.select(table.password_hash).where(table.id == uuid.UUID(actor.id))
    return bool(rows and rows[0]["password_hash"]) and not await _just_reset(token)


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
        await audit_security(actor, "session_revoke", "ok")
    return "current" if rows[0]["token_hash"] == token_hash(current_token) else "other"


async def revoke_other_sessions(actor: Actor, current_token: str) -> int:
    """End every session of the account on this face but the current one."""
    where = ((Session.account_id == uuid.UUID(actor.id)) & (Session.face == actor.face)
             & (Session.token_hash != token_hash(current_token)))
    async with write_transaction():
        count = await Session.count().where(where)
        await Session.delete().where(where)
        await audit_security(actor, "session_revoke_others", "ok", fields={"count": str(count)})
    return count


async def set_staff_active(username: str, active: bool) -> uuid.UUID | None:
    """Switch a staff account off (its sessions end at once; SSO cannot bring it back) or on again."""
    async with write_transaction():
        rows = await StaffAccount.select(StaffAccount.id).where(StaffAccount.username == username.casefold())
        if not rows:
            return None
        await StaffAccount.update({StaffAccount.active: active}).where(StaffAccount.id == rows[0]["id"])
        if not active:
            await Session.delete().where(Session.account_id == rows[0]["id"])
    return rows[0]["id"]


async def customer_account_id(email: str) -> uuid.UUID | None:
    rows = await CustomerAccount.select(CustomerAccount.id).where(
        CustomerAccount.email_index == signin_email_index(email))
    return rows[0]["id"] if rows else None


async def end_all_sessions(account_id: uuid.UUID | None = None) -> int:
    """An administrator ends every session of one account (any face), or of everyone."""
    where = Session.account_id == account_id if account_id is not None else Session.token_hash.is_not_null()
    async with write_transaction():
        count = await Session.count().where(where)
        await Session.delete().where(where)
    return count


def current_password_key(account_id: str) -> str:
    """The limit key of guesses at the current password on the password page."""
    return limits.limit_key("current-password", account_id)


async def _forget_staff_failures(username: str, account_id: str) -> int:
    """Every failed attempt on one staff account: password, code and current-password guesses."""
    return await limits.unlock("backoffice", [("staff", username), (limits.STAFF_MFA, account_id)],
                               (current_password_key(account_id),))


async def unlock_staff(username: str) -> int | None:
    """An administrator lifts the locks of one staff account: forgets its failed password and code
    attempts from every address. None when there is no such account."""
    username = username.strip().casefold()
    rows = await StaffAccount.select(StaffAccount.id).where(StaffAccount.username == username)
    if not rows:
        return None
    account_id = str(rows[0]["id"])
    async with write_transaction():
        count = await _forget_staff_failures(username, account_id)
        await audit_security(system_actor("staff-admin"), "signin_unlock", "ok",
                             fields={"account": username, "count": str(count)})
    return count


async def set_staff_password(username: str, password: str) -> bool | None:
    """An administrator gives a member of staff who forgot the password a new one (checked like any
    new password): the account's sessions end and its locks lift. Returns whether the account has an
    authenticator (which stays: the new password alone then signs nobody in), None when there is no
    such account."""
    username = username.strip().casefold()
    rows = await StaffAccount.select(StaffAccount.id, StaffAccount.totp_secret).where(
        StaffAccount.username == username)
    if not rows:
        return None
    if problem := password_problem(password, personal=(username,)):
        raise Invalid({"password": problem})
    new_hash = await hash_password(password)
    account_id = rows[0]["id"]
    async with write_transaction():
        await StaffAccount.update({StaffAccount.password_hash: new_hash}).where(StaffAccount.id == account_id)
        await Session.delete().where(Session.account_id == account_id)
        await _forget_staff_failures(username, str(account_id))
        await audit_security(system_actor("staff-admin"), "password_set_admin", "ok", fields={"account": username})
    return bool(rows[0]["totp_secret"])


async def unlock_customer(email: str) -> int | None:
    """An administrator lifts the locks of one customer account (sign-in, emailed links, resets), found
    by the sign-in address. None when no account signs in with it. The audit names the account id."""
    index = signin_email_index(email)
    rows = await CustomerAccount.select(CustomerAccount.id).where(CustomerAccount.email_index == index)
    if not rows:
        return None
    account_id = str(rows[0]["id"])
    async with write_transaction():
        count = await limits.unlock("portal", [("customer", index)], (current_password_key(account_id),))
        await audit_security(system_actor("staff-admin"), "signin_unlock", "ok",
                             fields={"customer_account": account_id, "count": str(count)})
    return count


async def revoke_all_sessions(account_id: uuid.UUID, face: str) -> None:
    """End every session of an account (after a credential reset or deactivation)."""
    await Session.delete().where((Session.account_id == account_id) & (Session.face == face))


async def remove_customer_accounts(person_id: uuid.UUID) -> None:
    """Delete a person's portal account, its sessions, passkeys and emailed links (part of erasure)."""
    accounts = await CustomerAccount.select(CustomerAccount.id).where(CustomerAccount.person_id == person_id)
    ids = [a["id"] for a in accounts]
    if ids:
        await Session.delete().where(Session.account_id.is_in(ids))
        await Passkey.delete().where((Passkey.account_kind == "customer") & Passkey.account_id.is_in(ids))
        await EmailToken.delete().where(EmailToken.account_id.is_in(ids))
        await CustomerAccount.delete().where(CustomerAccount.id.is_in(ids))
