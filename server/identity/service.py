"""Sign-in for both faces (passwords, the second step, a password change) and, for the callers that
import them from here, the sessions and account administration around it."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from server.actor import Actor
from server.db import write_transaction
from server.errors import Invalid, SignInFailed
from server.identity import limits, session_cache
from server.identity.accounts import (
    create_customer_account,
    create_staff,
    current_password_key,
    customer_account_id,
    has_staff_accounts,
    remove_customer_accounts,
    set_staff_active,
    set_staff_password,
    signin_email_index,
    unlock_customer,
    unlock_staff,
)
from server.identity.passwords import hash_password, needs_rehash, password_problem, verify_password
from server.identity.sessions import (
    GENERIC_FAILURE,
    STAGES,
    SessionInfo,
    SignedIn,
    _now,
    anonymous_actor,
    audit_security,
    customer_actor,
    end_all_sessions,
    forget_session,
    list_sessions,
    open_session,
    purge_expired,
    resume_session,
    revoke_all_sessions,
    revoke_other_sessions,
    revoke_session,
    rotate_session,
    sign_out,
    staff_actor,
    token_hash,
)
from server.identity.tables import (
    CustomerAccount,
    Session,
    StaffAccount,
)
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault import blind_index, normalise_email

__all__ = [
    "GENERIC_FAILURE",
    "NotVerified",
    "Pending",
    "STAGES",
    "SessionInfo",
    "SignedIn",
    "anonymous_actor",
    "audit_security",
    "complete_signin",
    "create_customer_account",
    "create_staff",
    "current_password_key",
    "customer_account_id",
    "customer_actor",
    "customer_sign_in",
    "end_all_sessions",
    "forget_session",
    "has_password",
    "has_staff_accounts",
    "list_sessions",
    "open_session",
    "password_needs_current",
    "pending_signin",
    "purge_expired",
    "record_failure",
    "remove_customer_accounts",
    "resume_session",
    "revoke_all_sessions",
    "revoke_other_sessions",
    "revoke_session",
    "rotate_session",
    "set_password",
    "set_staff_active",
    "set_staff_password",
    "sign_out",
    "signin_email_index",
    "staff_actor",
    "staff_sign_in",
    "token_hash",
    "unlock_customer",
    "unlock_staff",
]


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
        session_cache.invalidate()
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
        session_cache.invalidate()
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
        session_cache.invalidate()
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
