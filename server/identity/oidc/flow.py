"""Single sign-on's ceremony: begin, finish, and the staff account the claims name (linked, provisioned, updated)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from typing import Any
from urllib.parse import urlencode

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from server.db import is_unique_violation, write_transaction
from server.identity import session_cache
from server.identity.oidc.claims import (
    authenticated_time,
    roles_from_claims,
    second_factor_stage,
    team_from_claims,
    username_from_claims,
)
from server.identity.oidc.provider import (
    CHALLENGE_MINUTES,
    KIND,
    MSG_EXCHANGE,
    MSG_EXPIRED,
    MSG_INACTIVE,
    MSG_NO_ROLE,
    MSG_NO_USERNAME,
    MSG_PROVIDER_REFUSED,
    MSG_STATE,
    MSG_USERNAME_TAKEN,
    SsoFailed,
    Start,
    _exchange,
    _handle_hash,
    _now,
    _settings,
    provider,
    validate_id_token,
)
from server.identity.service import (
    SignedIn,
    audit_security,
    open_session,
    revoke_all_sessions,
    staff_actor,
)
from server.identity.tables import AuthChallenge, ExternalIdentity, StaffAccount
from server.kernel import get_kernel
from server.settings import Settings

log = logging.getLogger("mutual.oidc")


# ---- the ceremony ------------------------------------------------------------------------------------

async def begin_signin(redirect_uri: str) -> Start:
    """Keep a fresh state, nonce and PKCE verifier, and return where to send the browser."""
    settings = _settings()
    meta = await provider(settings)
    state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
    handle = secrets.token_urlsafe(32)
    now = _now()
    async with write_transaction():
        # Ceremonies that were never finished leave rows behind; each new one sweeps them up.
        await AuthChallenge.delete().where((AuthChallenge.kind == KIND) & (AuthChallenge.expires_at <= now))
        await AuthChallenge.insert(AuthChallenge(
            handle_hash=_handle_hash(handle), kind=KIND, created_at=now,
            expires_at=now + dt.timedelta(minutes=CHALLENGE_MINUTES),
            data=json.dumps({"state": state, "nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri,
                             "issuer": settings.oidc_issuer})))
    params = {
        "response_type": "code", "client_id": settings.oidc_client_id, "redirect_uri": redirect_uri,
        "scope": settings.oidc_scopes, "state": state, "nonce": nonce,
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
    }
    if settings.oidc_max_age_minutes is not None:
        # The provider signs the person in again when its own sign-in is older, and names that
        # sign-in's time in auth_time (OpenID Connect Core 3.1.2.1).
        params["max_age"] = str(settings.oidc_max_age_minutes * 60)
    query = urlencode(params)
    separator = "&" if "?" in meta.authorization_endpoint else "?"
    return Start(handle, f"{meta.authorization_endpoint}{separator}{query}")


async def _take_challenge(handle: str) -> dict[str, Any] | None:
    """The ceremony's state, deleted in the same step (single use); None when missing or expired."""
    if not handle:
        return None
    where = AuthChallenge.handle_hash == _handle_hash(handle)
    async with write_transaction():
        rows = await AuthChallenge.select().where(where)
        # Only the request whose DELETE removed the row may go on: two answers racing on PostgreSQL
        # may both have read it.
        deleted = await AuthChallenge.delete().where(where).returning(AuthChallenge.handle_hash) if rows else []
    if not rows or not deleted or rows[0]["kind"] != KIND or rows[0]["expires_at"] <= _now():
        return None
    data = json.loads(rows[0]["data"])
    return data if isinstance(data, dict) else None


async def finish_signin(handle: str, *, code: str, state: str, error: str, request_id: str,
                        device: str = "", replaces: str | None = None) -> SignedIn:
    """Complete a sign-in the provider sent back: a full backoffice session (the provider is
    responsible for the second factor), or SsoFailed with a message to show. The session of
    `replaces` (the browser's previous token, if any) ends in the same step."""
    settings = _settings()
    challenge = await _take_challenge(handle)
    # Without a live attempt in this browser nothing else matters, an error from the provider included
    # (anyone can send one; as "expired" it counts towards the client's limit).
    if challenge is None or challenge.get("issuer") != settings.oidc_issuer:
        raise SsoFailed("expired", MSG_EXPIRED)
    if error:
        # Before the state: an error never signs anyone in, and some providers leave out the state.
        raise SsoFailed("provider_error", MSG_PROVIDER_REFUSED)
    if not state or not hmac.compare_digest(state.encode(), str(challenge["state"]).encode()):
        raise SsoFailed("state", MSG_STATE)
    if not code:
        raise SsoFailed("exchange", MSG_EXCHANGE)
    meta = await provider(settings)
    id_token = await _exchange(meta, settings, code, challenge["verifier"], challenge["redirect_uri"])
    claims = await validate_id_token(meta, settings.oidc_client_id, id_token, challenge["nonce"])
    return await _sign_in_staff(meta.issuer, claims, settings, request_id, device, replaces)


def subject_hashes(issuer: str, sub: str) -> list[str]:
    """The keyed hash of issuer|sub under each "signin" index key, the active key's first."""
    value = f"{issuer}|{sub}".encode()
    return [f"{key_id}:{hmac.new(key, value, hashlib.sha256).hexdigest()[:32]}"
            for key_id, key in get_kernel().keys.purpose_key_versions("signin", "oidc-subject")]


async def _linked_account(hashes: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The ExternalIdentity row of a subject and the staff account it links to (either may be None)."""
    links = await ExternalIdentity.select().where(ExternalIdentity.subject_hash.is_in(hashes))
    if not links:
        return None, None
    rows = await StaffAccount.select().where(StaffAccount.id == links[0]["account_id"])
    return links[0], (rows[0] if rows else None)


async def _sign_in_staff(issuer: str, claims: dict[str, Any], settings: Settings, request_id: str,
                         device: str, replaces: str | None) -> SignedIn:
    hashes = subject_hashes(issuer, str(claims["sub"]))
    roles = roles_from_claims(claims, settings)
    if not roles:
        async with write_transaction():
            _, account = await _linked_account(hashes)
            if account is not None and account["roles"]:
                # The provider no longer gives this person a role here: neither do we, from now on.
                await StaffAccount.update({StaffAccount.roles: ""}).where(StaffAccount.id == account["id"])
                await revoke_all_sessions(account["id"], "backoffice")
                await audit_security(staff_actor(account, request_id), "sso_roles_change", "ok",
                                     fields={"roles": "", "source": "oidc"})
        raise SsoFailed("no_role", MSG_NO_ROLE)
    try:
        return await _link_and_open(hashes, claims, settings, roles, request_id, device, replaces)
    except Exception as exc:
        # Two first sign-ins of one person at once (PostgreSQL, read committed): both found no link,
        # and the later one failed on the unique user name, either at the insert or (when the other had
        # committed by then) at the check for a taken name. Its transaction rolled back; the other made
        # the account and its link, so this one signs in to them. Anything else is raised as it is.
        raced = is_unique_violation(exc) or (isinstance(exc, SsoFailed) and exc.reason == "username_taken")
        if not raced or (await _linked_account(hashes))[1] is None:
            raise
    log.warning("SSO: a simultaneous first sign-in of the same person made the account; signing in to it")
    return await _link_and_open(hashes, claims, settings, roles, request_id, device, replaces)


async def _link_and_open(hashes: list[str], claims: dict[str, Any], settings: Settings, roles: list[str],
                         request_id: str, device: str, replaces: str | None) -> SignedIn:
    """In one transaction: the linked account (made on the first sign-in, updated from the claims on
    later ones) and its session."""
    now = _now()
    async with write_transaction():
        link, account = await _linked_account(hashes)
        if account is not None and not account["active"]:
            raise SsoFailed("inactive", MSG_INACTIVE)
        if account is None:
            account = await _provision(claims, settings, roles, request_id, now)
            if link is not None:  # a link left behind by a deleted account
                await ExternalIdentity.delete().where(ExternalIdentity.id == link["id"])
            await ExternalIdentity.insert(ExternalIdentity(id=uuid.uuid4(), subject_hash=hashes[0],
                                                           account_id=account["id"], created_at=now,
                                                           last_signin_at=now))
        else:
            assert link is not None
            account = await _update_from_claims(account, claims, settings, roles, request_id)
            await ExternalIdentity.update({ExternalIdentity.subject_hash: hashes[0],
                                           ExternalIdentity.last_signin_at: now}).where(
                ExternalIdentity.id == link["id"])
        proven_at = authenticated_time(claims, now, asked_max_age=settings.oidc_max_age_minutes is not None)
        return await open_session("backoffice", account["id"], staff_actor(account, request_id), method="oidc",
                                  device=device, replaces=replaces, authenticated_at=proven_at,
                                  stage=second_factor_stage(claims, account, settings))


async def _provision(claims: dict[str, Any], settings: Settings, roles: list[str], request_id: str,
                     now: dt.datetime) -> dict[str, Any]:
    username = username_from_claims(claims)
    if username is None:
        raise SsoFailed("no_username", MSG_NO_USERNAME)
    if await StaffAccount.exists().where(StaffAccount.username == username):
        raise SsoFailed("username_taken", MSG_USERNAME_TAKEN)
    account = {"id": uuid.uuid4(), "username": username, "roles": ",".join(roles),
               "team": team_from_claims(claims, settings) if settings.oidc_team_claim else None,
               "password_hash": "", "active": True, "created_at": now}
    await StaffAccount.insert(StaffAccount(**account))  # type: ignore[arg-type]
    await audit_security(staff_actor(account, request_id), "sso_account_create", "ok",
                         fields={"roles": str(account["roles"]), "source": "oidc"})
    return account


async def _update_from_claims(account: dict[str, Any], claims: dict[str, Any], settings: Settings,
                              roles: list[str], request_id: str) -> dict[str, Any]:
    """Roles (and the team, when a team claim is configured) as the provider says now."""
    changes: dict[Any, Any] = {}
    if ",".join(roles) != account["roles"]:
        changes[StaffAccount.roles] = ",".join(roles)
    team = team_from_claims(claims, settings) if settings.oidc_team_claim else account["team"]
    if team != account["team"]:
        changes[StaffAccount.team] = team
    if not changes:
        return account
    await StaffAccount.update(changes).where(StaffAccount.id == account["id"])
    session_cache.invalidate()
    updated = {**account, "roles": ",".join(roles), "team": team}
    await audit_security(staff_actor(updated, request_id), "sso_roles_change", "ok",
                         fields={"roles": updated["roles"], "source": "oidc",
                                 "team": "changed" if StaffAccount.team in changes else "same"})
    return updated
