"""Customer sign-up, emailed sign-in links, address verification and password reset.

An emailed link carries a random token; the database keeps only its hash, the account, the purpose
and the hash of a random value held in the asking browser's cookie. A link works once, for
`email_link_minutes`, and only in that browser: a mail scanner or someone who reads the mail
elsewhere cannot use it. Opening the link (GET) consumes nothing; only the form it shows (POST)
redeems it.

The answers to "sign me up" and "email me a link" never tell whether an account exists: the page is
the same, and the lookup, the account creation and the mail happen after the response is sent
(`deliver_*` run as background tasks).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server.actor import system_actor
from server.crm import service as people
from server.db import write_transaction
from server.errors import Invalid
from server.identity import limits, session_cache
from server.identity.link_mails import existing_account_mail, link_mail, mail_on_record
from server.identity.passwords import hash_password, password_problem
from server.identity.service import (
    SignedIn,
    anonymous_actor,
    audit_security,
    create_customer_account,
    customer_actor,
    open_session,
    signin_email_index,
    token_hash,
)
from server.identity.tables import CustomerAccount, EmailToken
from server.settings import get_settings

log = logging.getLogger("mutual.identity.email_links")

PURPOSES = ("signin", "verify", "reset")
METHODS = {"signin": "email_link", "verify": "email_link", "reset": "reset_link"}
"""The session method each purpose signs in with; the password page trusts a young reset_link session."""
LIMIT_KINDS = {"signin": "email_link", "verify": "email_link", "reset": "reset"}
SIGNUP_PURPOSE = "customer_service"
"""A sign-up starts the contract with the customer; the system actor "signup" records the person."""
_BROWSER_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
REASONS = ("expired", "used", "other_browser", "unknown")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- input -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SignupForm:
    given_name: str
    family_name: str
    email: str
    password: str = dataclasses.field(repr=False, default="")


def check_signup(form: Mapping[str, str]) -> SignupForm:
    """The sign-up form, normalised; Invalid names every problem and its fix."""
    values = {k: str(form.get(k, "")) for k in ("given_name", "family_name", "email")}
    errors: dict[str, str] = {}
    try:
        cleaned = people.clean_person(values)
    except Invalid as exc:
        errors.update(exc.errors)
        cleaned = {}
    if "email" not in errors and not cleaned.get("email"):
        errors["email"] = "is required; enter the address we should send the confirmation link to"
    password = str(form.get("password", ""))
    if password and (problem := password_problem(password)):
        errors["password"] = problem
    if errors:
        raise Invalid(errors)
    return SignupForm(cleaned.get("given_name") or "", cleaned["family_name"] or "", cleaned["email"] or "",
                      password)


def check_email(raw: str) -> str:
    """An email address from the "email me a link" form, or Invalid."""
    email = " ".join(str(raw).split())
    if not email:
        raise Invalid({"email": "is empty; enter the email address of your account"})
    if len(email) > 254:
        raise Invalid({"email": f"is {len(email)} characters long; an email address has at most 254"})
    if problem := people.email_problem(email):
        raise Invalid({"email": problem})
    return email


def browser_value(current: str | None) -> str:
    """The random value of this browser's link cookie: the one it has, or a new one."""
    if current and _BROWSER_RE.match(current):
        return current
    return secrets.token_urlsafe(32)


def browser_hash(value: str | None) -> str:
    return hashlib.sha256((value or "").encode()).hexdigest()


# --- rate limits (counted per request: they limit mails sent, not failures) ----------------------

async def limit_signup(client: str, email: str = "") -> None:
    """Raise TooManyAttempts when this client (or anyone, for this email address) signed up too often;
    else count this sign-up. The address key caps the mails one address can be sent this way."""
    keys = [limits.limit_key("ip", client)]
    if email:
        keys.append(limits.limit_key("signup-address", signin_email_index(email)))
    await limits.check("signup", "portal", keys)
    await limits.record("signup", "portal", keys)


async def limit_link_request(purpose: str, email: str, client: str, request_id: str) -> None:
    """Raise TooManyAttempts when too many links were asked for this address or from this client;
    else count and audit the request (the audit event names neither)."""
    kind = LIMIT_KINDS[purpose]
    keys = limits.account_keys("customer", signin_email_index(email), client)
    await limits.check(kind, "portal", keys)
    async with write_transaction():
        await limits.record(kind, "portal", keys)
        await audit_security(anonymous_actor("portal", request_id), "email_link_request", "ok")


async def limit_verify_resend(account_id: uuid.UUID, client: str, request_id: str) -> None:
    """The same limit for the verification link a password sign-in of an unverified account sends."""
    rows = await CustomerAccount.select(CustomerAccount.email_index).where(CustomerAccount.id == account_id)
    index = rows[0]["email_index"] if rows else str(account_id)
    keys = limits.account_keys("customer", index, client)
    await limits.check("email_link", "portal", keys)
    async with write_transaction():
        await limits.record("email_link", "portal", keys)
        await audit_security(anonymous_actor("portal", request_id), "email_link_request", "ok")


# --- mails -------------------------------------------------------------------------------------

# --- links -------------------------------------------------------------------------------------

async def _new_link(account_id: uuid.UUID, purpose: str, browser: str, origin: str) -> str:
    assert purpose in PURPOSES
    token = secrets.token_urlsafe(32)
    now = _now()
    await EmailToken.insert(EmailToken(
        token_hash=token_hash(token), account_id=account_id, purpose=purpose,
        browser_hash=browser_hash(browser), created_at=now,
        expires_at=now + dt.timedelta(minutes=get_settings().email_link_minutes)))
    return f"{origin}/signin/email/open?t={token}"


async def _active_account(index: str) -> dict | None:
    rows = await CustomerAccount.select().where(
        (CustomerAccount.email_index == index) & (CustomerAccount.active == True))  # noqa: E712
    return rows[0] if rows else None


async def deliver_link(purpose: str, email: str, browser: str, origin: str) -> None:
    """Background task of "email me a link": mail a link to the address on record when the address
    finds an active account, else do nothing (the visitor was told the same either way)."""
    try:
        account = await _active_account(signin_email_index(email))
        if account is None:
            return
        link = await _new_link(account["id"], purpose, browser, origin)
        await mail_on_record(account["person_id"], lambda to: link_mail(purpose, to, link))
    except Exception as exc:  # noqa: BLE001 - the response has gone; log without details
        log.error("email link not sent: %s", type(exc).__name__)


async def deliver_verify_link(account_id: uuid.UUID, email: str, browser: str, origin: str) -> None:
    """Background task after a password sign-in of an unverified account: a new verification link."""
    try:
        rows = await CustomerAccount.select(CustomerAccount.email_index, CustomerAccount.person_id).where(
            (CustomerAccount.id == account_id) & (CustomerAccount.active == True))  # noqa: E712
        # The address comes from the sign-in form; it must find the account's own.
        if not rows or rows[0]["email_index"] != signin_email_index(email):
            return
        link = await _new_link(account_id, "verify", browser, origin)
        await mail_on_record(rows[0]["person_id"], lambda to: link_mail("verify", to, link))
    except Exception as exc:  # noqa: BLE001
        log.error("verification link not sent: %s", type(exc).__name__)


UNCONFIRMED_HOURS = 24


async def purge_unconfirmed_signups() -> int:
    """Erase (crypto-shred) the people of sign-ups whose address was not confirmed within a day: their
    data was never proven to be theirs (storage limitation), and the address is free again."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=UNCONFIRMED_HOURS)
    stale = await CustomerAccount.select(CustomerAccount.person_id).where(
        CustomerAccount.verified_at.is_null() & (CustomerAccount.created_at < cutoff))
    actor = dataclasses.replace(system_actor("signup-expiry"), face="portal")
    for row in stale:
        await people.erase_person(actor, row["person_id"])
    return len(stale)


async def deliver_signup(form: SignupForm, browser: str, origin: str) -> None:
    """Background task of a sign-up: an address with an account gets a "you already have an account"
    mail and nothing else; otherwise the person and an unverified account are created together and
    a verification link is mailed."""
    index = signin_email_index(form.email)
    try:
        await purge_unconfirmed_signups()
        if await _tell_existing_account(index, origin):
            return
        password_hash = await hash_password(form.password) if form.password else ""
        actor = dataclasses.replace(system_actor("signup"), face="portal")
        values = {"given_name": form.given_name, "family_name": form.family_name, "email": form.email}
        try:
            # One transaction: the gateway and the account join it, so a failed account (say, a
            # sign-up of the same address a moment earlier) leaves no person behind.
            async with write_transaction():
                person_id = await people.create_person(actor, values, purpose=SIGNUP_PURPOSE)
                account_id = await create_customer_account(person_id, form.email, verified=False)
                if password_hash:
                    await CustomerAccount.update({CustomerAccount.password_hash: password_hash}).where(
                        CustomerAccount.id == account_id)
        except Exception:
            if await _tell_existing_account(index, origin):
                return
            raise
        link = await _new_link(account_id, "verify", browser, origin)
        await mail_on_record(person_id, lambda to: link_mail("verify", to, link))
    except Exception as exc:  # noqa: BLE001
        log.error("sign-up not completed: %s", type(exc).__name__)


async def _tell_existing_account(index: str, origin: str) -> bool:
    """When the address finds an account: tell its owner, at the address on record, and say True."""
    rows = await CustomerAccount.select(CustomerAccount.person_id).where(CustomerAccount.email_index == index)
    if not rows:
        return False
    await mail_on_record(rows[0]["person_id"], lambda to: existing_account_mail(to, origin))
    return True


async def reindex_signin_addresses(progress: Callable[[str, int], Any] | None = None) -> int:
    """Recompute every customer account's sign-in index from the address on record (read through the
    gateway, audited), for accounts made before addresses were compared as IDNA2008 A-labels with ASCII
    local parts: such an account (a domain with ß, say) is found again by its own spelling, and no
    longer by a look-alike's. Returns how many indexes changed; each account is its own transaction."""
    accounts = await CustomerAccount.select(CustomerAccount.id, CustomerAccount.person_id,
                                            CustomerAccount.email_index)
    bar = progress("sign-in index rebuild", len(accounts)) if progress is not None and accounts else None
    changed = 0
    for account in accounts:
        address = await people.address_on_record(account["person_id"])
        index = signin_email_index(address) if address else None
        if index is not None and index != account["email_index"]:
            async with write_transaction():
                await CustomerAccount.update({CustomerAccount.email_index: index}).where(
                    CustomerAccount.id == account["id"])
            changed += 1
        if bar is not None:
            bar.advance()
    if bar is not None:
        bar.close()
    return changed


# --- opening and redeeming ---------------------------------------------------------------------

class LinkRefused(Exception):
    """The link cannot be used; `reason` is one of REASONS, `purpose` what it was for (if known)."""

    def __init__(self, reason: str, purpose: str = "signin") -> None:
        super().__init__(reason)
        self.reason = reason
        self.purpose = purpose


async def _usable(token: str, browser: str | None) -> dict:
    """The token's row if it can be redeemed in this browser now, else LinkRefused."""
    if not _TOKEN_RE.match(token or ""):
        raise LinkRefused("unknown")
    rows = await EmailToken.select().where(EmailToken.token_hash == token_hash(token))
    if not rows:
        raise LinkRefused("unknown")
    row = rows[0]
    if row["used_at"] is not None:
        raise LinkRefused("used", row["purpose"])
    if row["expires_at"] <= _now():
        raise LinkRefused("expired", row["purpose"])
    if not secrets.compare_digest(row["browser_hash"], browser_hash(browser)):
        raise LinkRefused("other_browser", row["purpose"])
    return row


async def peek(token: str, browser: str | None) -> str:
    """What the link is for, without using it up (mail scanners open links too); LinkRefused if it
    cannot be used here."""
    return (await _usable(token, browser))["purpose"]


@dataclass(frozen=True)
class Redeemed:
    signed_in: SignedIn
    purpose: str


async def redeem(token: str, browser: str | None, request_id: str, device: str = "",
                 replaces: str | None = None) -> Redeemed:
    """Use the link up and sign in; a refusal is audited with its reason and raised as LinkRefused."""
    try:
        return await _redeem(token, browser, request_id, device, replaces)
    except LinkRefused as exc:
        await audit_security(anonymous_actor("portal", request_id), "email_link_redeem", "failed",
                             fields={"reason": exc.reason})
        raise


async def _redeem(token: str, browser: str | None, request_id: str, device: str,
                  replaces: str | None) -> Redeemed:
    row = await _usable(token, browser)
    purpose, now = row["purpose"], _now()
    async with write_transaction():
        # Conditional: of two racing redeems only one finds the row still unused.
        used = await EmailToken.update({EmailToken.used_at: now}).where(
            (EmailToken.token_hash == row["token_hash"]) & EmailToken.used_at.is_null()
            & (EmailToken.expires_at > now)).returning(EmailToken.token_hash)
        if not used:
            raise LinkRefused("used", purpose)
        # One link in, the account's other outstanding links are spent too (a reset or a sign-in ends
        # whatever else was asked for, perhaps by someone else).
        await EmailToken.update({EmailToken.used_at: now}).where(
            (EmailToken.account_id == row["account_id"]) & EmailToken.used_at.is_null())
        accounts = await CustomerAccount.select().where(
            (CustomerAccount.id == row["account_id"]) & (CustomerAccount.active == True))  # noqa: E712
        if not accounts:
            raise LinkRefused("unknown", purpose)
        account = accounts[0]
        changes: dict = {}
        if account["verified_at"] is None:
            # Following any of our links proves the address.
            changes[CustomerAccount.verified_at] = now
            if purpose != "verify" and account["password_hash"]:
                # A password set before the address was proven was chosen by whoever signed up,
                # who need not be the owner of the address (someone may have signed up with another
                # person's address to take over the account once it is verified). The owner signs in
                # by link here and can set a password of their own. A verify link, by contrast, only
                # works in the browser that signed up (or signed in with that password), so there
                # the password is the owner's.
                changes[CustomerAccount.password_hash] = ""
        if changes:
            await CustomerAccount.update(changes).where(CustomerAccount.id == account["id"])
            session_cache.invalidate()
        actor = customer_actor(account, request_id)
        signed_in = await open_session(
            "portal", account["id"], actor, method=METHODS[purpose], device=device, replaces=replaces,
            clear_keys=(limits.wide_key("customer", account["email_index"]),))
    return Redeemed(signed_in, purpose)


__all__ = [
    "LinkRefused",
    "Redeemed",
    "SignupForm",
    "browser_hash",
    "browser_value",
    "check_email",
    "check_signup",
    "deliver_link",
    "deliver_signup",
    "deliver_verify_link",
    "limit_link_request",
    "limit_signup",
    "limit_verify_resend",
    "peek",
    "redeem",
    "reindex_signin_addresses",
]
