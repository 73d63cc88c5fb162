"""Single sign-on's provider side: configuration, discovery, keys, the code exchange and ID-token checks."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import logging
import re
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from server.errors import DomainError
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
