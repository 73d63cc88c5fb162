"""Account administration: creating staff and customer accounts, switching them off, lifting locks, an
administrator's new password, and removing a person's portal accounts on erasure."""

from __future__ import annotations

import uuid

from server.actor import system_actor
from server.db import write_transaction
from server.errors import Invalid
from server.identity import limits, session_cache
from server.identity.passwords import hash_password, password_problem
from server.identity.sessions import (
    _now,
    audit_security,
)
from server.identity.tables import (
    CustomerAccount,
    EmailToken,
    Passkey,
    Session,
    StaffAccount,
)
from server.kernel import get_kernel
from server.vault import blind_index, normalise_email


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


async def set_staff_active(username: str, active: bool) -> uuid.UUID | None:
    """Switch a staff account off (its sessions end at once; SSO cannot bring it back) or on again."""
    async with write_transaction():
        rows = await StaffAccount.select(StaffAccount.id).where(StaffAccount.username == username.casefold())
        if not rows:
            return None
        await StaffAccount.update({StaffAccount.active: active}).where(StaffAccount.id == rows[0]["id"])
        if not active:
            await Session.delete().where(Session.account_id == rows[0]["id"])
        session_cache.invalidate()
    return rows[0]["id"]


async def customer_account_id(email: str) -> uuid.UUID | None:
    rows = await CustomerAccount.select(CustomerAccount.id).where(
        CustomerAccount.email_index == signin_email_index(email))
    return rows[0]["id"] if rows else None


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
        session_cache.invalidate()
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


async def remove_customer_accounts(person_id: uuid.UUID) -> None:
    """Delete a person's portal account, its sessions, passkeys and emailed links (part of erasure)."""
    accounts = await CustomerAccount.select(CustomerAccount.id).where(CustomerAccount.person_id == person_id)
    ids = [a["id"] for a in accounts]
    if ids:
        await Session.delete().where(Session.account_id.is_in(ids))
        await Passkey.delete().where((Passkey.account_kind == "customer") & Passkey.account_id.is_in(ids))
        await EmailToken.delete().where(EmailToken.account_id.is_in(ids))
        await CustomerAccount.delete().where(CustomerAccount.id.is_in(ids))
        session_cache.invalidate()
