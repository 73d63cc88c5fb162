"""Staff single sign-on through an OpenID Connect provider (authorization code flow with PKCE).

The flow, in three steps:

1. `begin_signin` makes a random state, nonce and PKCE code verifier, keeps them in an
   `AuthChallenge` (kind "oidc", ten minutes) under the hash of a random handle that only the
   browser holds (in a cookie, see server.web.oidc), and returns the provider's authorization URL.
2. The provider signs the person in (and is responsible for their second factor) and sends the
   browser back with `code` and `state`.
3. `finish_signin` takes the challenge (deleting it: one use, whatever the outcome), checks the
   state, exchanges the code (with the code verifier) at the token endpoint, and validates the ID
   token: its signature against the provider's published keys (JWKS), `iss`, `aud`, `azp`, `exp`,
   `iat` and `nonce`. The claims then name the staff account: linked through `ExternalIdentity`,
   whose `subject_hash` is a keyed hash (the "signin" blind-index key) of `issuer|sub`, so neither
   the subject nor the issuer is stored; a first sign-in provisions an account named after
   `preferred_username`. Roles (and the team, when `oidc_team_claim` is set) come from the claims
   at every sign-in.

Provider metadata (discovery) and keys are cached per process; keys are fetched again when a token
names a key the cache does not hold (the provider rotated its keys). Only https providers are
accepted, except on the loopback interface (127.0.0.1, ::1, localhost), where test providers run.

Nothing from the claims goes into logs, audit events or messages: failures carry a short reason
code (`SsoFailed.reason`) and a message written here.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time
import unicodedata
import uuid
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from server.db import is_unique_violation, write_transaction
from server.errors import DomainError
from server.identity.service import (
    SignedIn,
    audit_security,
    open_session,
    revoke_all_sessions,
    staff_actor,
)
from server.identity.tables import AuthChallenge, ExternalIdentity, StaffAccount
from server.kernel import get_kernel
from server.settings import Settings, get_settings

log = logging.getLogger("mutual.oidc")

KIND = "oidc"
CHALLENGE_MINUTES = 10
DISCOVERY_SECONDS = 3600
KEYS_SECONDS = 3600
KEYS_REFETCH_SECONDS = 30
"""A token naming an unknown key fetches the key set again, but not more often than this."""
HTTP_TIMEOUT = 10.0
LEEWAY_SECONDS = 60
"""Clock skew tolerated on exp and iat."""
MAX_TOKEN_AGE_SECONDS = CHALLENGE_MINUTES * 60 + LEEWAY_SECONDS
"""An ID token issued before the sign-in began is refused (iat older than the challenge)."""
# Asymmetric signatures only: never "none", and no HMAC with the client secret.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                      "EdDSA")
USERNAME_MAX = 64
TEAM_MAX = 64
_USERNAME_OK = re.compile(r"^[^\s\x00-\x1f\x7f]+$")

MSG_NOT_SET_UP = "Single sign-on is not set up here. Sign in with your user name and password."
MSG_UNAVAILABLE = ("The identity provider cannot be reached just now, so single sign-on is not possible. "
                   "Try again in a few minutes, or sign in with your user name and password.")
MSG_EXPIRED = ("This single sign-on attempt has expired or was already used. Start again with the "
               "single sign-on button.")
MSG_STATE = ("This single sign-on answer does not belong to the sign-in started in this browser. Start again "
             "with the single sign-on button.")
MSG_PROVIDER_REFUSED = ("The identity provider did not sign you in (it was cancelled or refused there). Try "
                        "again, or sign in with your user name and password.")
MSG_EXCHANGE = ("The identity provider did not confirm the sign-in. Start again; if it keeps failing, ask an "
                "administrator.")
MSG_TOKEN = ("The identity provider's answer could not be verified, so you are not signed in. Start again; "
             "if it keeps failing, ask an administrator.")
MSG_NO_ROLE = "Your account at the identity provider has no role for Mutual; ask an administrator."
MSG_NO_USERNAME = ("The identity provider sent no usable user name (preferred_username) for your account; "
                   "ask an administrator.")
MSG_USERNAME_TAKEN = ("Another Mutual account already has the user name your identity provider gives you, so "
                      "it was not taken over; ask an administrator to rename that account.")
MSG_INACTIVE = "Your Mutual account is switched off; ask an administrator."


class SsoNotConfigured(DomainError):
    """No provider is configured (MUTUAL_OIDC_ISSUER is empty): the SSO routes answer 404."""

    status = 404

    def __init__(self) -> None:
        super().__init__(MSG_NOT_SET_UP)


class SsoFailed(DomainError):
    """A sign-in that did not succeed. The message is safe to show; `reason` is a short code for the
    audit event (never data from the claims)."""

    status = 400

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class SsoUnavailable(SsoFailed):
    """The provider is unreachable, answers nonsense, or is configured wrongly (503)."""

    def __init__(self, reason: str, message: str = MSG_UNAVAILABLE) -> None:
        super().__init__(reason, message, 503)


@dataclasses.dataclass(frozen=True)
class Provider:
    """The parts of the provider's discovery document the flow uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]
    token_auth: str
    """client_secret_basic (the default) or client_secret_post."""


@dataclasses.dataclass(frozen=True)
class Start:
    """A begun sign-in: `handle` goes into the browser's cookie, the browser goes to `url`."""

    handle: str
    url: str


_providers: dict[str, tuple[Provider, float]] = {}
_keys: dict[str, tuple[KeySet, float]] = {}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _handle_hash(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


# ---- configuration ----------------------------------------------------------------------------------

def is_configured(settings: Settings | None = None) -> bool:
    return bool((settings or get_settings()).oidc_issuer)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.casefold() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def transport_problem(url: str, name: str) -> str | None:
    """Why `url` may not be used to talk to the provider, or None: https only, plain http only on the
    loopback interface (a test provider on this machine)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{name} is not a URL; write it as https://id.example.org"
    if not parts.hostname or parts.scheme not in ("https", "http"):
        return f"{name} is not an http(s) URL; write it as https://id.example.org"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return (f"{name} uses plain http, which is only allowed for a provider on 127.0.0.1 or localhost; "
                "use the provider's https URL")
    return None


def configuration_problems(settings: Settings | None = None) -> list[str]:
    """What is wrong with the MUTUAL_OIDC_* settings (empty when SSO is off or set up correctly);
    each names the setting and the fix. Suitable for a start-up or `mutual check` report."""
    settings = settings or get_settings()
    if not settings.oidc_issuer:
        return []
    problems = []
    if problem := transport_problem(settings.oidc_issuer, "MUTUAL_OIDC_ISSUER"):
        problems.append(problem)
    if not settings.oidc_client_id:
        problems.append("MUTUAL_OIDC_CLIENT_ID is empty; set it to the client id registered at the provider")
    if not settings.oidc_role_map:
        problems.append("MUTUAL_OIDC_ROLE_MAP is empty, so nobody would get a role; set it like "
                        "crm-admins=admin,crm-sales=sales")
    known = get_kernel().policies.roles - {"customer"}
    unknown = sorted({role for role in settings.oidc_role_map.values() if role not in known})
    if unknown:
        problems.append(f"MUTUAL_OIDC_ROLE_MAP names unknown role(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known))}")
    if "openid" not in settings.oidc_scopes.split():
        problems.append("MUTUAL_OIDC_SCOPES must include openid (for example: openid profile email)")
    return problems


def _settings() -> Settings:
    settings = get_settings()
    if not settings.oidc_issuer:
        raise SsoNotConfigured()
    problems = configuration_problems(settings)
    if problems:
        for problem in problems:
            log.error("single sign-on is misconfigured: %s", problem)
        raise SsoUnavailable("config", "Single sign-on is not set up correctly: " + "; ".join(problems)
                             + ". Ask an administrator.")
    return settings


# ---- talking to the provider --------------------------------------------------------------------------

async def _get_json(url: str, what: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as client:
            response = await client.get(url, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        log.warning("single sign-on: %s unreachable (%s)", what, type(exc).__name__)
        raise SsoUnavailable("unreachable") from None
    if response.status_code != 200:
        log.warning("single sign-on: %s answered %s", what, response.status_code)
        raise SsoUnavailable("unreachable")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        log.warning("single sign-on: %s is not a JSON object", what)
        raise SsoUnavailable("bad_metadata")
    return body


async def provider(settings: Settings | None = None) -> Provider:
    """The configured provider's metadata from its discovery document, cached for an hour."""
    settings = settings or _settings()
    issuer = settings.oidc_issuer
    cached = _providers.get(issuer)
    if cached and time.monotonic() - cached[1] < DISCOVERY_SECONDS:
        return cached[0]
    doc = await _get_json(f"{issuer}/.well-known/openid-configuration", "discovery")
    # The document must be the configured issuer's own (OpenID Connect Discovery 1.0, section 4.3);
    # a trailing slash is the only difference allowed, as the setting drops it.
    if not isinstance(doc.get("issuer"), str) or doc["issuer"].rstrip("/") != issuer:
        log.error("single sign-on: the discovery document names another issuer than MUTUAL_OIDC_ISSUER")
        raise SsoUnavailable("config", "Single sign-on is not set up correctly: the provider calls itself by "
                                       "another issuer than MUTUAL_OIDC_ISSUER. Ask an administrator.")
    fields: dict[str, str] = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        url = doc.get(name)
        problem = transport_problem(url, name) if isinstance(url, str) else f"{name} is missing"
        if problem or not isinstance(url, str):
            log.error("single sign-on: the provider's discovery document is not usable: %s", problem)
            raise SsoUnavailable("bad_metadata")
        fields[name] = url
    offered = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = tuple(a for a in SIGNING_ALGORITHMS if a in offered) or ("RS256",)
    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    token_auth = ("client_secret_post" if "client_secret_basic" not in methods
                  and "client_secret_post" in methods else "client_secret_basic")
    found = Provider(issuer=doc["issuer"], algorithms=algorithms, token_auth=token_auth, **fields)
    _providers[issuer] = (found, time.monotonic())
    return found


async def _key_set(meta: Provider, *, refresh: bool = False) -> KeySet:
    cached = _keys.get(meta.jwks_uri)
    now = time.monotonic()
    if cached and (now - cached[1] < KEYS_SECONDS) and not (refresh and now - cached[1] >= KEYS_REFETCH_SECONDS):
        return cached[0]
    doc = await _get_json(meta.jwks_uri, "key set")
    try:
        keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
    except (JoseError, KeyError, TypeError, ValueError):
        log.warning("single sign-on: the provider's key set holds no usable key")
        raise SsoUnavailable("bad_keys") from None
    _keys[meta.jwks_uri] = (keys, now)
    return keys


def _s(value: str) -> str:
    return quote(value, safe="")


async def _exchange(meta: Provider, settings: Settings, code: str, verifier: str, redirect_uri: str) -> str:
    """The ID token for an authorization code (RFC 6749 4.1.3 with the PKCE verifier, RFC 7636)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier}
    headers = {"accept": "application/json"}
    if meta.token_auth == "client_secret_post":
        form |= {"client_id": settings.oidc_client_id, "client_secret": settings.oidc_client_secret}
    else:  # RFC 6749 2.3.1: both parts form-encoded before the Basic encoding
        pair = f"{_s(settings.oidc_client_id)}:{_s(settings.oidc_client_secret)}"
        headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as client:
            response = await client.post(meta.token_endpoint, data=form, headers=headers)
    except httpx.HTTPError as exc:
        log.warning("single sign-on: token endpoint unreachable (%s)", type(exc).__name__)
        raise SsoUnavailable("unreachable") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        # The error code is the OAuth vocabulary (invalid_grant, invalid_client, ...), never personal.
        log.warning("single sign-on: token endpoint answered %s %s", response.status_code,
                    error if isinstance(error, str) and error.isascii() and len(error) < 40 else "")
        raise SsoFailed("exchange", MSG_EXCHANGE)
    id_token = body.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        log.warning("single sign-on: the token endpoint sent no ID token (is the openid scope granted?)")
        raise SsoFailed("token", MSG_TOKEN)
    return id_token


async def validate_id_token(meta: Provider, client_id: str, id_token: str, nonce: str) -> dict[str, Any]:
    """The claims of an ID token, after checking it as OpenID Connect Core 1.0 section 3.1.3.7 asks."""
    try:
        keys = await _key_set(meta)
        try:
            token = jwt.decode(id_token, keys, algorithms=list(meta.algorithms))
        except InvalidKeyIdError:  # the provider has rotated its keys since we fetched them
            token = jwt.decode(id_token, await _key_set(meta, refresh=True), algorithms=list(meta.algorithms))
    except JoseError as exc:
        log.warning("single sign-on: ID token refused (%s)", type(exc).__name__)
        raise SsoFailed("token", MSG_TOKEN) from None
    claims = token.claims
    now = int(time.time())
    registry = jwt.JWTClaimsRegistry(
        now=now, leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": meta.issuer},
        sub={"essential": True},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        log.warning("single sign-on: ID token claims refused (%s)", type(exc).__name__)
        raise SsoFailed("token", MSG_TOKEN) from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (len(audiences) > 1 and azp is None) or (azp is not None and azp != client_id):
        log.warning("single sign-on: ID token refused (authorized party is not this client)")
        raise SsoFailed("token", MSG_TOKEN)
    if claims["iat"] < now - MAX_TOKEN_AGE_SECONDS:
        log.warning("single sign-on: ID token refused (issued before this sign-in began)")
        raise SsoFailed("token", MSG_TOKEN)
    return claims


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


# ---- claims to a staff account ----------------------------------------------------------------------

# RFC 8176 authentication method references that mean more than a password was used.
MFA_AMR = frozenset({"mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm", "pop"})


def authenticated_time(claims: dict[str, Any], now: dt.datetime, asked_max_age: bool) -> dt.datetime | None:
    """When the person last proved who they are at the provider: the ID token's auth_time (never later
    than now), so an old sign-in there is no recent sign-in here (ASVS 6.8.4, 7.5.1). Without a usable
    auth_time: not known (None, never recent) when max_age was sent, since the provider must then name
    it; the time of the callback when the operator switched max_age off."""
    value = claims.get("auth_time")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None if asked_max_age else now
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        seconds = math.inf if value > 0 else -math.inf
    if math.isnan(seconds):
        return None if asked_max_age else now
    return dt.datetime.fromtimestamp(min(max(seconds, 0.0), now.timestamp()), dt.UTC)


def provider_did_mfa(claims: dict[str, Any]) -> bool:
    """The ID token's amr shows more than one factor: "mfa" itself, or at least two methods of which
    one is more than a password (a security key alone, ["hwk"], is one factor)."""
    amr = claims.get("amr")
    raw = [amr] if isinstance(amr, str) else amr if isinstance(amr, list) else []
    values = {v.lower() for v in raw if isinstance(v, str)}
    return "mfa" in values or (len(values) >= 2 and bool(values & (MFA_AMR - {"mfa"})))


def second_factor_stage(claims: dict[str, Any], account: dict[str, Any], settings: Settings) -> str:
    """Staff pass a second factor however they sign in (ASVS 6.3.4, 6.8.4). The provider's counts when
    MUTUAL_OIDC_MFA=provider, or (amr, the default) when the ID token's amr claim shows one; without
    that claim the fallback assumes a password alone was used, and Mutual asks for its own code: from
    an enrolled authenticator always, and enrolment first when MUTUAL_STAFF_MFA=required."""
    provider_ok = settings.oidc_mfa == "provider" or (settings.oidc_mfa == "amr" and provider_did_mfa(claims))
    if provider_ok:
        return "full"
    if account.get("totp_secret"):
        return "mfa"
    return "enrol" if settings.staff_mfa == "required" else "full"


def roles_from_claims(claims: dict[str, Any], settings: Settings) -> list[str]:
    """The Mutual roles the claims map to (known roles only), sorted."""
    value = claims.get(settings.oidc_role_claim)
    if isinstance(value, str):
        values = value.split()
    elif isinstance(value, list):
        values = [v for v in value if isinstance(v, str)]
    else:
        values = []
    known = get_kernel().policies.roles - {"customer"}
    return sorted({settings.oidc_role_map[v] for v in values if v in settings.oidc_role_map} & known)


def team_from_claims(claims: dict[str, Any], settings: Settings) -> str | None:
    value = claims.get(settings.oidc_team_claim)
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), None)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:TEAM_MAX]


def username_from_claims(claims: dict[str, Any]) -> str | None:
    value = claims.get("preferred_username")
    if not isinstance(value, str):
        return None
    username = unicodedata.normalize("NFKC", value).strip().casefold()
    if not username or len(username) > USERNAME_MAX or not _USERNAME_OK.match(username):
        return None
    return username


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
    updated = {**account, "roles": ",".join(roles), "team": team}
    await audit_security(staff_actor(updated, request_id), "sso_roles_change", "ok",
                         fields={"roles": updated["roles"], "source": "oidc",
                                 "team": "changed" if StaffAccount.team in changes else "same"})
    return updated
