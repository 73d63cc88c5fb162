"""Staff second factor: TOTP (RFC 6238) with QR enrolment, and one-time recovery codes.

The seed is sealed under the key file's `mfa` key; during enrolment the candidate seed travels in
the form, sealed and bound to the account and the time it was issued, so nothing is stored until
the first code proves the authenticator app holds it. A code is accepted once: the last accepted
30-second step is kept and a code for that step or an earlier one is refused (no replay).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass

import pyotp
import segno

from server.actor import Actor
from server.db import write_transaction
from server.identity import session_cache
from server.identity.passwords import hash_lookup_secrets, verify_lookup_secret
from server.identity.service import audit_security
from server.identity.tables import RecoveryCode, Session, StaffAccount
from server.kernel import get_kernel
from server.vault.sealed import DecryptionFailed, open_secret, seal_secret

STEP = 30
ISSUER = "Mutual"
RECOVERY_CODES = 10
ENROLMENT_SECONDS = 15 * 60


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _binding(account_id: uuid.UUID | str) -> str:
    return f"identity_staff_account.totp_secret|{account_id}"


def _enrolment_binding(account_id: uuid.UUID | str) -> str:
    return f"totp-enrolment|{account_id}"


@dataclass(frozen=True)
class Enrolment:
    secret: str
    """Base32 seed, shown as text for apps that cannot scan."""
    uri: str
    qr_svg: str
    sealed: str
    """The seed sealed for the confirmation form."""


def begin_enrolment(account_id: uuid.UUID, username: str) -> Enrolment:
    secret = pyotp.random_base32()
    uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)
    svg = segno.make(uri, error="m").svg_inline(scale=4, border=4, dark="#111", light="#fff",
                                                omitsize=False)
    sealed = seal_secret(get_kernel().keys, _enrolment_binding(account_id), f"{secret}|{int(time.time())}")
    return Enrolment(secret, uri, svg, sealed)


def _enrolment_secret(account_id: uuid.UUID, sealed: str) -> str | None:
    try:
        secret, issued = open_secret(get_kernel().keys, _enrolment_binding(account_id), sealed).split("|")
    except (DecryptionFailed, ValueError):
        return None
    return secret if time.time() - int(issued) < ENROLMENT_SECONDS else None


def _clean(code: str) -> str:
    return "".join(ch for ch in code if ch.isalnum()).lower()


def _matching_step(secret: str, code: str, after: int | None, now: float | None = None) -> int | None:
    """The step within one step of now whose code is `code`, if it is later than `after`."""
    code = _clean(code)
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP)
    for step in (current - 1, current, current + 1):
        expected = totp.at(step * STEP).encode()
        if (after is None or step > after) and hmac.compare_digest(expected, code.encode()):
            return step
    return None


def _legacy_hashes(code: str) -> list[str]:
    """The keyed hash recovery codes were stored with before they had a salted password hash, under
    each version of the `mfa` key: codes of that time still work until they are used or replaced."""
    value = f"recovery|{_clean(code)}".encode()
    return [hmac.new(key, value, hashlib.sha256).hexdigest()
            for _, key in get_kernel().keys.purpose_key_versions("mfa", "recovery-mac")]


async def _code_matches(stored: str, code: str) -> bool:
    if stored.startswith("$argon2"):
        return await verify_lookup_secret(stored, _clean(code))
    return any(hmac.compare_digest(stored, candidate) for candidate in _legacy_hashes(code))


CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_RE = re.compile(f"^[{CODE_ALPHABET}]{{12}}$")


def _new_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


@dataclass(frozen=True)
class _FreshCodes:
    codes: list[str]
    hashes: list[str]


async def _fresh_codes() -> _FreshCodes:
    """New recovery codes and their salted hashes (made before any write transaction: hashing ten
    takes a few hundred milliseconds)."""
    codes = _new_codes()
    return _FreshCodes(codes, await hash_lookup_secrets([_clean(c) for c in codes]))


async def _replace_recovery_codes(account_id: uuid.UUID, fresh: _FreshCodes) -> list[str]:
    now = _now()
    await RecoveryCode.delete().where(RecoveryCode.account_id == account_id)
    await RecoveryCode.insert(*[RecoveryCode(id=uuid.uuid4(), account_id=account_id, code_hash=h,
                                             created_at=now) for h in fresh.hashes])
    return fresh.codes


async def confirm_enrolment(actor: Actor, account_id: uuid.UUID, sealed: str, code: str) -> list[str] | None:
    """Store the seed once a code from it is right; returns the fresh recovery codes (shown once),
    or None when the code is wrong or the enrolment expired."""
    secret = _enrolment_secret(account_id, sealed)
    step = _matching_step(secret, code, None) if secret else None
    if secret is None or step is None:
        return None
    fresh = await _fresh_codes()
    async with write_transaction():
        # Only an account without an authenticator enrols: a sign-in that waited at the enrolment step
        # must not replace the one the owner has set up meanwhile.
        enrolled = await StaffAccount.update({
            StaffAccount.totp_secret: seal_secret(get_kernel().keys, _binding(account_id), secret),
            StaffAccount.totp_last_step: step,
        }).where((StaffAccount.id == account_id) & StaffAccount.totp_secret.is_null()).returning(StaffAccount.id)
        if not enrolled:
            return None
        session_cache.invalidate()
        codes = await _replace_recovery_codes(account_id, fresh)
        await audit_security(actor, "mfa_enrol", "ok", fields={"factor": "totp"})
    return codes


async def check_code(account: dict, code: str) -> str | None:
    """Accept a TOTP code or an unused recovery code for this account (each once). Returns the factor
    that passed ("totp" or "recovery_code"), or None."""
    sealed = account.get("totp_secret")
    if sealed:
        secret = open_secret(get_kernel().keys, _binding(account["id"]), sealed)
        step = _matching_step(secret, code, account.get("totp_last_step"))
        if step is not None:
            # Conditional: of two requests racing with the same code, one wins.
            updated = await StaffAccount.update({StaffAccount.totp_last_step: step}).where(
                (StaffAccount.id == account["id"])
                & ((StaffAccount.totp_last_step.is_null()) | (StaffAccount.totp_last_step < step))
            ).returning(StaffAccount.id)
            return "totp" if updated else None
    if _RECOVERY_RE.match(_clean(code)):
        # Each unused code has its own salt, so each is checked (at most ten); what cannot be a code
        # costs no hashing.
        rows = await RecoveryCode.select(RecoveryCode.id, RecoveryCode.code_hash).where(
            (RecoveryCode.account_id == account["id"]) & RecoveryCode.used_at.is_null())
        for row in rows:
            if await _code_matches(row["code_hash"], code):
                # Conditional: of two requests racing with the same code, one wins.
                used = await RecoveryCode.update({RecoveryCode.used_at: _now()}).where(
                    (RecoveryCode.id == row["id"]) & RecoveryCode.used_at.is_null()).returning(RecoveryCode.id)
                return "recovery_code" if used else None
    return None


async def regenerate_recovery_codes(actor: Actor) -> list[str]:
    account_id = uuid.UUID(actor.id)
    fresh = await _fresh_codes()
    async with write_transaction():
        codes = await _replace_recovery_codes(account_id, fresh)
        await audit_security(actor, "recovery_codes_regenerate", "ok")
    return codes


async def recovery_codes_left(account_id: uuid.UUID) -> int:
    return await RecoveryCode.count().where((RecoveryCode.account_id == account_id)
                                            & RecoveryCode.used_at.is_null())


async def has_totp(account_id: uuid.UUID) -> bool:
    rows = await StaffAccount.select(StaffAccount.totp_secret).where(StaffAccount.id == account_id)
    return bool(rows and rows[0]["totp_secret"])


async def reset_totp(username: str) -> bool:
    """Administrator's reset for a lost authenticator: the account's sessions end and it enrols again at
    the next sign-in."""
    async with write_transaction():
        rows = await StaffAccount.select(StaffAccount.id).where(StaffAccount.username == username.casefold())
        if not rows:
            return False
        await StaffAccount.update({StaffAccount.totp_secret: None, StaffAccount.totp_last_step: None}).where(
            StaffAccount.id == rows[0]["id"])
        await RecoveryCode.delete().where(RecoveryCode.account_id == rows[0]["id"])
        # Whoever holds the lost device may hold a signed-in browser too.
        await Session.delete().where(Session.account_id == rows[0]["id"])
        session_cache.invalidate()
    return True
