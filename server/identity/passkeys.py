"""Passkeys (WebAuthn) for staff and customers: registration by a signed-in account, sign-in with a
discoverable credential, listing and removal.

A ceremony's challenge lives in `AuthChallenge`, keyed by the hash of a random handle that only the
browser holds (in a `__Host-` cookie, see server.web.passkeys): the handle works for the anonymous
sign-in as well as for registration, survives a session rotation in between, and binds the challenge
to the browser that asked for it. The row is deleted when it is used, successful or not, so a
challenge answers once. Registration also binds it to the account and face that asked.

A passkey is only accepted with user verification (PIN, fingerprint, face), so it counts as two
factors: a staff passkey sign-in opens a full session without a TOTP code. Staff passkeys sign in
to the backoffice only, customer passkeys to the portal only.

Nothing personal goes into the options: the user name is the staff handle, or a neutral
"Mutual customer" for customers, and the user id is the account id.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from server.actor import Actor
from server.db import write_transaction
from server.errors import DomainError, NotFound
from server.identity import limits
from server.identity.service import (
    SignedIn,
    anonymous_actor,
    audit_security,
    customer_actor,
    open_session,
    record_failure,
    staff_actor,
    token_hash,
)
from server.identity.tables import AuthChallenge, CustomerAccount, Passkey, StaffAccount

RP_NAME = "Mutual"
CUSTOMER_USER_NAME = "Mutual customer"
CHALLENGE_MINUTES = 5
TIMEOUT_MS = 120_000
REGISTER, SIGNIN = "webauthn-register", "webauthn-signin"
ACCOUNT_KINDS = {"backoffice": "staff", "portal": "customer"}
LABEL_MAX = 64

MSG_EXPIRED = ("This passkey request has expired or was already used. "
               f"Start again with the button (you have {CHALLENGE_MINUTES} minutes).")
MSG_UNKNOWN = ("This passkey is not registered here. Sign in another way, then add the passkey "
               "under Passkeys.")
MSG_NOT_VERIFIED = ("Your device did not verify you. Unlock the passkey with your PIN, fingerprint or "
                    "face, then try again.")
MSG_ORIGIN = "This passkey answer was made for another site. Open this site's own address and try again."
MSG_BAD = "The passkey's answer could not be checked. Try again, or use another passkey."
MSG_ACCOUNT = "This account cannot sign in at the moment. Ask us for help, or sign in another way."
MSG_DUPLICATE = "This passkey is already registered. Use it to sign in, or add another one."


class PasskeyRefused(DomainError):
    """A passkey ceremony failed; the message says why and what to do, and holds no personal data."""

    status = 400


@dataclass(frozen=True)
class PasskeyInfo:
    id: str
    label: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class Ceremony:
    """A started ceremony: `handle` goes into the browser's cookie, `options` (JSON) to the page."""

    handle: str
    options: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _hash(handle: str) -> str:
    return token_hash(handle)


def label_problem(label: str) -> str | None:
    if not label:
        return "Give the passkey a name, such as the device it is on (for example Laptop)."
    if len(label) > LABEL_MAX:
        return f"The name is {len(label)} characters long; shorten it to at most {LABEL_MAX}."
    if any(ord(c) < 32 for c in label):
        return "The name contains control characters; use letters, digits and spaces."
    return None


async def _store_challenge(kind: str, data: dict[str, str]) -> str:
    handle = secrets.token_urlsafe(32)
    now = _now()
    async with write_transaction():
        # Ceremonies that were never finished leave rows behind; each new one sweeps them up.
        await AuthChallenge.delete().where(
            AuthChallenge.kind.is_in([REGISTER, SIGNIN]) & (AuthChallenge.expires_at <= now))
        await AuthChallenge.insert(AuthChallenge(
            handle_hash=_hash(handle), kind=kind, data=json.dumps(data), created_at=now,
            expires_at=now + dt.timedelta(minutes=CHALLENGE_MINUTES)))
    return handle


async def _take_challenge(kind: str, handle: str) -> dict[str, str] | None:
    """The ceremony's state, deleted in the same step (single use); None when missing or expired."""
    if not handle:
        return None
    async with write_transaction():
        rows = await AuthChallenge.delete().where(AuthChallenge.handle_hash == _hash(handle)).returning(
            AuthChallenge.kind, AuthChallenge.data, AuthChallenge.expires_at)
    if not rows or rows[0]["kind"] != kind:
        return None
    expires = rows[0]["expires_at"]
    if isinstance(expires, str):  # SQLite's RETURNING carries no declared type
        expires = dt.datetime.fromisoformat(expires)
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    if expires <= _now():
        return None
    data = json.loads(rows[0]["data"])
    return data if isinstance(data, dict) else None


def _reason(exc: Exception) -> str:
    """A safe, helpful message for a failed WebAuthn check (the library's text may echo input)."""
    text = str(exc)
    if "User verification" in text:
        return MSG_NOT_VERIFIED
    if "origin" in text or "RP ID" in text:
        return MSG_ORIGIN
    return MSG_BAD


def _transports(credential: dict[str, Any]) -> str:
    response = credential.get("response")
    found = response.get("transports") if isinstance(response, dict) else None
    if not isinstance(found, list):
        return ""
    known = {t.value for t in AuthenticatorTransport}
    return ",".join(t for t in found if isinstance(t, str) and t in known)[:200]


def _descriptor(row: dict[str, Any]) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in row["transports"].split(",") if t]
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(row["credential_id"]),
                                         transports=transports or None)


def _account_kind(actor: Actor) -> str:
    return "staff" if actor.kind == "staff" else "customer"


async def start_registration(actor: Actor, label: str, rp_id: str) -> Ceremony:
    """Options for navigator.credentials.create(): a discoverable, user-verified credential, none of
    the account's existing passkeys again."""
    label = " ".join(label.split())
    if problem := label_problem(label):
        raise PasskeyRefused(problem)
    existing = await Passkey.select(Passkey.credential_id, Passkey.transports).where(
        (Passkey.account_kind == _account_kind(actor)) & (Passkey.account_id == uuid.UUID(actor.id)))
    name = actor.display if actor.kind == "staff" and actor.display else CUSTOMER_USER_NAME
    options = generate_registration_options(
        rp_id=rp_id, rp_name=RP_NAME, user_id=uuid.UUID(actor.id).bytes, user_name=name,
        user_display_name=name, timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[_descriptor(r) for r in existing])
    handle = await _store_challenge(REGISTER, {
        "challenge": bytes_to_base64url(options.challenge), "account_id": actor.id, "face": actor.face,
        "label": label})
    return Ceremony(handle, options_to_json(options))


async def finish_registration(actor: Actor, handle: str, credential: Any, origin: str, rp_id: str) -> str:
    """Check the authenticator's answer and keep the passkey; returns its id."""
    state = await _take_challenge(REGISTER, handle)
    if state is None or state.get("account_id") != actor.id or state.get("face") != actor.face:
        raise PasskeyRefused(MSG_EXPIRED)
    if not isinstance(credential, dict):
        raise PasskeyRefused(MSG_BAD)
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=base64url_to_bytes(state["challenge"]),
            expected_rp_id=rp_id, expected_origin=origin, require_user_verification=True)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        await audit_security(actor, "passkey_add", "failed")
        raise PasskeyRefused(_reason(exc)) from None
    credential_id = bytes_to_base64url(verified.credential_id)
    passkey_id = uuid.uuid4()
    async with write_transaction():
        if await Passkey.exists().where(Passkey.credential_id == credential_id):
            raise PasskeyRefused(MSG_DUPLICATE)
        await Passkey.insert(Passkey(
            id=passkey_id, account_kind=_account_kind(actor), account_id=uuid.UUID(actor.id),
            credential_id=credential_id, public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count, transports=_transports(credential), label=state["label"],
            created_at=_now()))
        await audit_security(actor, "passkey_add", "ok", fields={"passkey": str(passkey_id)})
    return str(passkey_id)


async def list_passkeys(actor: Actor) -> list[PasskeyInfo]:
    rows = await Passkey.select(Passkey.id, Passkey.label, Passkey.created_at, Passkey.last_used_at).where(
        (Passkey.account_kind == _account_kind(actor)) & (Passkey.account_id == uuid.UUID(actor.id))
    ).order_by(Passkey.created_at)
    return [PasskeyInfo(str(r["id"]), r["label"], r["created_at"], r["last_used_at"]) for r in rows]


async def delete_passkey(actor: Actor, passkey_id: str) -> None:
    """Remove one of the account's own passkeys; NotFound for any other id (another account's too)."""
    try:
        wanted = uuid.UUID(passkey_id)
    except ValueError:
        raise NotFound("There is no such passkey on your account.") from None
    where = ((Passkey.id == wanted) & (Passkey.account_kind == _account_kind(actor))
             & (Passkey.account_id == uuid.UUID(actor.id)))
    async with write_transaction():
        if not await Passkey.exists().where(where):
            raise NotFound("There is no such passkey on your account.")
        await Passkey.delete().where(where)
        await audit_security(actor, "passkey_remove", "ok", fields={"passkey": str(wanted)})


async def start_signin(rp_id: str) -> Ceremony:
    """Options for navigator.credentials.get(): no credential list (the authenticator offers its
    discoverable passkeys for this site), user verification required."""
    options = generate_authentication_options(rp_id=rp_id, timeout=TIMEOUT_MS,
                                              user_verification=UserVerificationRequirement.REQUIRED)
    handle = await _store_challenge(SIGNIN, {"challenge": bytes_to_base64url(options.challenge)})
    return Ceremony(handle, options_to_json(options))


async def finish_signin(face: str, handle: str, credential: Any, origin: str, rp_id: str, client: str,
                        request_id: str, device: str = "", replaces: str | None = None) -> SignedIn:
    """Check a passkey assertion and open a full session on this face."""
    keys = [limits.limit_key("ip", client)]
    await limits.check("signin", face, keys)
    anonymous = anonymous_actor(face, request_id)

    async def refuse(message: str) -> PasskeyRefused:
        await record_failure(face, keys, anonymous, kind="signin")
        return PasskeyRefused(message)

    state = await _take_challenge(SIGNIN, handle)
    if state is None:
        raise await refuse(MSG_EXPIRED)
    credential_id = credential.get("id") if isinstance(credential, dict) else None
    if not isinstance(credential_id, str) or not credential_id:
        raise await refuse(MSG_BAD)
    rows = await Passkey.select().where((Passkey.credential_id == credential_id)
                                        & (Passkey.account_kind == ACCOUNT_KINDS[face]))
    if not rows:
        raise await refuse(MSG_UNKNOWN)
    passkey = rows[0]
    response = credential.get("response")
    user_handle = response.get("userHandle") if isinstance(response, dict) else None
    if user_handle:
        try:
            same_account = base64url_to_bytes(user_handle) == passkey["account_id"].bytes
        except (ValueError, TypeError):
            same_account = False
        if not same_account:
            raise await refuse(MSG_BAD)
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=base64url_to_bytes(state["challenge"]),
            expected_rp_id=rp_id, expected_origin=origin,
            credential_public_key=base64url_to_bytes(passkey["public_key"]),
            credential_current_sign_count=passkey["sign_count"], require_user_verification=True)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise await refuse(_reason(exc)) from None
    actor = await _active_actor(face, passkey["account_id"], request_id)
    if actor is None:
        raise await refuse(MSG_ACCOUNT)
    await Passkey.update({Passkey.sign_count: verified.new_sign_count, Passkey.last_used_at: _now()}).where(
        Passkey.id == passkey["id"])
    return await open_session(face, passkey["account_id"], actor, method="passkey", device=device,
                              replaces=replaces)


async def _active_actor(face: str, account_id: uuid.UUID, request_id: str) -> Actor | None:
    if face == "backoffice":
        rows = await StaffAccount.select().where((StaffAccount.id == account_id)
                                                 & (StaffAccount.active == True))  # noqa: E712
        return staff_actor(rows[0], request_id) if rows else None
    rows = await CustomerAccount.select().where((CustomerAccount.id == account_id)
                                                & (CustomerAccount.active == True))  # noqa: E712
    if not rows or rows[0]["verified_at"] is None:
        return None
    return customer_actor(rows[0], request_id)


async def remove_account_passkeys(account_kind: str, account_id: uuid.UUID) -> None:
    """Delete every passkey of an account (part of erasing or removing it)."""
    await Passkey.delete().where((Passkey.account_kind == account_kind) & (Passkey.account_id == account_id))
