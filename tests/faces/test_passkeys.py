"""Passkeys (WebAuthn) on both faces, driven over HTTP with a software authenticator: the real
ceremonies, byte for byte as a browser and a platform authenticator would run them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from server.identity.tables import AuthChallenge, CustomerAccount, Passkey
from server.settings import get_settings
from server.web.auth import SESSION_COOKIES
from tests.faces._client import (
    BASE_URL,
    HOST,
    Client,
    csrf_token,
    events_since,
    face_client,
    last_seq,
    make_customer,
    make_staff,
    post_form,
    signed_in,
    staff_session,
    use_cookies,
)
from tests.support import ERIKA, MAX, csrf_from

UP, UV, AT = 0x01, 0x04, 0x40
OTHER_ORIGIN = "https://evil.example"


# ---- a software authenticator -------------------------------------------------------------------

@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


@dataclass
class Authenticator:
    """A platform authenticator in software: P-256 keys, "none" attestation, resident credentials."""

    credentials: list[Credential] = field(default_factory=list)

    def create(self, options: dict[str, Any], origin: str = BASE_URL, *, uv: bool = True,
               challenge: str | None = None) -> dict[str, Any]:
        rp_id = options["rp"]["id"]
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        cose_key = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                                -3: numbers.y.to_bytes(32, "big")})
        credential = Credential(os.urandom(32), key, rp_id, base64url_to_bytes(options["user"]["id"]))
        self.credentials.append(credential)
        flags = UP | AT | (UV if uv else 0)
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", 0)
                     + bytes(16) + struct.pack(">H", len(credential.id)) + credential.id + cose_key)
        client_data = _client_data("webauthn.create", challenge or options["challenge"], origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        cred_id = bytes_to_base64url(credential.id)
        return {"id": cred_id, "rawId": cred_id, "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": bytes_to_base64url(client_data),
                             "attestationObject": bytes_to_base64url(attestation), "transports": ["internal"]}}

    def get(self, options: dict[str, Any], origin: str = BASE_URL, *, uv: bool = True,
            credential: Credential | None = None, sign_count: int | None = None) -> dict[str, Any]:
        """An assertion with a discoverable credential for the options' RP (the newest, or the one given)."""
        assert options["allowCredentials"] == [], "passkey sign-in names no credentials"
        rp_id = options["rpId"]
        credential = credential or [c for c in self.credentials if c.rp_id == rp_id][-1]
        credential.sign_count = credential.sign_count + 1 if sign_count is None else sign_count
        flags = UP | (UV if uv else 0)
        auth_data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I",
                                                                                          credential.sign_count)
        client_data = _client_data("webauthn.get", options["challenge"], origin)
        signature = credential.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        cred_id = bytes_to_base64url(credential.id)
        return {"id": cred_id, "rawId": cred_id, "type": "public-key", "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": bytes_to_base64url(client_data),
                             "authenticatorData": bytes_to_base64url(auth_data),
                             "signature": bytes_to_base64url(signature),
                             "userHandle": bytes_to_base64url(credential.user_handle)}}


def _client_data(kind: str, challenge: str, origin: str) -> bytes:
    return json.dumps({"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}).encode()


# ---- set-up -------------------------------------------------------------------------------------

async def _json_post(client: Client, url: str, body: Any, csrf: str) -> Any:
    return await client.post(url, json=body, headers={"x-csrftoken": csrf})


async def _register(client: Client, csrf: str, authenticator: Authenticator, label: str = "Laptop",
                    **create: Any) -> Any:
    options = await _json_post(client, "/account/passkeys/options", {"label": label}, csrf)
    assert options.status_code == 200, options.text
    return await _json_post(client, "/account/passkeys", authenticator.create(options.json(), **create), csrf)


async def _sign_in_options(client: Client, csrf: str) -> dict[str, Any]:
    response = await _json_post(client, "/signin/passkey/options", {}, csrf)
    assert response.status_code == 200, response.text
    return response.json()


async def _passkey_sign_in(client: Client, csrf: str, authenticator: Authenticator, **get: Any) -> Any:
    options = await _sign_in_options(client, csrf)
    return await _json_post(client, "/signin/passkey", authenticator.get(options, **get), csrf)


@asynccontextmanager
async def _customer_browser(email: str) -> AsyncIterator[tuple[Client, str]]:
    async with face_client("portal") as client:
        csrf = await signed_in(client, email, "customer-password-for-tests")
        yield client, csrf


@asynccontextmanager
async def _anonymous_browser(face: str) -> AsyncIterator[tuple[Client, str]]:
    async with face_client(face) as client:
        yield client, await csrf_token(client)


@asynccontextmanager
async def _staff_browser(username: str) -> AsyncIterator[tuple[Client, str]]:
    async with face_client("backoffice") as client:
        use_cookies(client, {SESSION_COOKIES["backoffice"]: await staff_session(username)})
        page = await client.get("/account/passkeys")
        assert page.status_code == 200, f"the staff session is not signed in: {page.status_code}"
        yield client, csrf_from(page.text)


def _error(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return str(response.json()["error"])


# ---- registration and sign-in -------------------------------------------------------------------

async def test_a_customer_adds_a_passkey_on_the_portal_and_signs_in_with_it(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        page = await client.get("/account/passkeys")
        assert page.status_code == 200
        assert "<title>Passkeys" in page.text and "<h1>Passkeys</h1>" in page.text
        assert "Add a passkey" in page.text and "You have no passkeys yet." in page.text
        before = await last_seq()
        added = await _register(client, csrf, authenticator, label="Erika's   phone")
        assert added.status_code == 200, added.text
        assert added.json() == {"redirect": "/account/passkeys?added=1"}
        [event] = await events_since(before)
        assert (event.action, event.entity, event.outcome) == ("passkey_add", "session", "ok")
        assert "Erika" not in json.dumps(event.fields)
        page = await client.get("/account/passkeys?added=1")
        assert "Passkey added." in page.text and "Erika&#39;s phone" in page.text and "Never" in page.text

    async with _anonymous_browser("portal") as (client, csrf):
        before = await last_seq()
        response = await _passkey_sign_in(client, csrf, authenticator)
        assert response.status_code == 200, response.text
        assert response.json() == {"redirect": "/profile"}
        assert SESSION_COOKIES["portal"] in client.cookies
        [event] = await events_since(before)
        assert (event.action, event.outcome, event.actor_kind, event.fields) == (
            "signin", "ok", "customer", {"method": "passkey"})
        assert (await client.get("/profile")).status_code == 200
        page = await client.get("/account/passkeys")
        assert "Never" not in page.text  # last used is shown now

    [row] = await Passkey.select()
    assert row["account_kind"] == "customer" and row["sign_count"] == 1 and row["transports"] == "internal"


async def test_registration_options_ask_for_a_verified_discoverable_passkey_and_name_no_person(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, authenticator)).status_code == 200
        response = await _json_post(client, "/account/passkeys/options", {"label": "Phone"}, csrf)
        options = response.json()
        cookie = [h for h in response.headers.get_list("set-cookie")
                  if h.startswith(f"{SESSION_COOKIES['portal']}-passkey=")]
    assert options["rp"] == {"name": "Mutual", "id": HOST}
    assert options["user"]["name"] == options["user"]["displayName"] == "Mutual customer"
    for tell in (ERIKA["email"], "Erika", "Mustermann"):
        assert tell not in response.text
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert [c["id"] for c in options["excludeCredentials"]] == [bytes_to_base64url(authenticator.credentials[0].id)]
    [header] = cookie
    assert all(part in header.lower() for part in ("secure", "httponly", "samesite=strict", "path=/"))


async def test_a_passkey_needs_a_name(db: None) -> None:
    await make_customer(ERIKA)
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        empty = await _json_post(client, "/account/passkeys/options", {"label": "  "}, csrf)
        long = await _json_post(client, "/account/passkeys/options", {"label": "x" * 65}, csrf)
    assert empty.status_code == 400 and "Give the passkey a name" in _error(empty)
    assert long.status_code == 400 and "at most 64" in _error(long)


async def test_a_staff_passkey_signs_in_to_the_backoffice_without_a_code_and_never_to_the_portal(
        db: None) -> None:
    """Staff need a second factor, and this account has an authenticator app: a verified passkey is
    both factors, so its sign-in opens a full session without asking for a code."""
    assert get_settings().staff_mfa == "required"
    await make_staff("admin", "admin")
    authenticator = Authenticator()
    async with _staff_browser("admin") as (client, csrf):
        options = (await _json_post(client, "/account/passkeys/options", {"label": "YubiKey"}, csrf)).json()
        assert options["user"]["name"] == "admin"
        added = await _json_post(client, "/account/passkeys", authenticator.create(options), csrf)
        assert added.status_code == 200, added.text

    async with _anonymous_browser("backoffice") as (client, csrf):
        before = await last_seq()
        response = await _passkey_sign_in(client, csrf, authenticator)
        assert response.status_code == 200, response.text
        assert response.json() == {"redirect": "/"}
        assert (await client.get("/account/passkeys")).status_code == 200
        [event] = await events_since(before)
        assert (event.action, event.outcome, event.actor_kind, event.fields) == (
            "signin", "ok", "staff", {"method": "passkey"})

    async with _anonymous_browser("portal") as (client, csrf):
        before = await last_seq()
        response = await _passkey_sign_in(client, csrf, authenticator)
        assert response.status_code == 400
        assert "not registered here" in _error(response)
        assert SESSION_COOKIES["portal"] not in client.cookies
        assert [(e.action, e.outcome) for e in await events_since(before)] == [("signin", "failed")]


async def test_a_customer_passkey_does_not_sign_in_to_the_backoffice(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, authenticator)).status_code == 200
    async with _anonymous_browser("backoffice") as (client, csrf):
        response = await _passkey_sign_in(client, csrf, authenticator)
        assert response.status_code == 400 and "not registered here" in _error(response)
        assert SESSION_COOKIES["backoffice"] not in client.cookies


# ---- what is refused ----------------------------------------------------------------------------

async def test_answers_made_for_another_origin_are_refused(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        before = await last_seq()
        refused = await _register(client, csrf, authenticator, origin=OTHER_ORIGIN)
        assert refused.status_code == 400 and "another site" in _error(refused)
        assert [(e.action, e.outcome) for e in await events_since(before)] == [("passkey_add", "failed")]
        assert await Passkey.count() == 0
        assert (await _register(client, csrf, authenticator)).status_code == 200
    async with _anonymous_browser("portal") as (client, csrf):
        refused = await _passkey_sign_in(client, csrf, authenticator, origin=OTHER_ORIGIN)
        assert refused.status_code == 400 and "another site" in _error(refused)
        assert SESSION_COOKIES["portal"] not in client.cookies


async def test_a_configured_origin_is_the_one_expected(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_customer(ERIKA)
    monkeypatch.setenv("MUTUAL_PORTAL_ORIGIN", "https://portal.example.org")
    get_settings.cache_clear()
    try:
        authenticator = Authenticator()
        async with _customer_browser(ERIKA["email"]) as (client, csrf):
            options = (await _json_post(client, "/account/passkeys/options", {"label": "Laptop"}, csrf)).json()
            assert options["rp"]["id"] == "portal.example.org"
            wrong = await _json_post(client, "/account/passkeys", authenticator.create(options), csrf)
            assert wrong.status_code == 400  # made for the request's origin, not the configured one
            options = (await _json_post(client, "/account/passkeys/options", {"label": "Laptop"}, csrf)).json()
            right = await _json_post(client, "/account/passkeys",
                                     authenticator.create(options, origin="https://portal.example.org"), csrf)
            assert right.status_code == 200, right.text
    finally:
        monkeypatch.delenv("MUTUAL_PORTAL_ORIGIN")
        get_settings.cache_clear()


async def test_a_challenge_answers_once(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        options = (await _json_post(client, "/account/passkeys/options", {"label": "Laptop"}, csrf)).json()
        handle = client.cookies[f"{SESSION_COOKIES['portal']}-passkey"]
        answer = authenticator.create(options)
        assert (await _json_post(client, "/account/passkeys", answer, csrf)).status_code == 200
        client.cookies.set(f"{SESSION_COOKIES['portal']}-passkey", handle, domain=HOST)
        again = await _json_post(client, "/account/passkeys", authenticator.create(options), csrf)
        assert again.status_code == 400 and "expired or was already used" in _error(again)
        authenticator.credentials.pop()  # the refused one is not a passkey of this site
    async with _anonymous_browser("portal") as (client, csrf):
        options = await _sign_in_options(client, csrf)
        handle = client.cookies[f"{SESSION_COOKIES['portal']}-passkey"]
        answer = authenticator.get(options)
        assert (await _json_post(client, "/signin/passkey", answer, csrf)).status_code == 200
        use_cookies(client, {})
        client.cookies.set(f"{SESSION_COOKIES['portal']}-passkey", handle, domain=HOST)
        replay = await _json_post(client, "/signin/passkey", answer, csrf)
        assert replay.status_code == 400 and "expired or was already used" in _error(replay)
        assert SESSION_COOKIES["portal"] not in client.cookies
        # An answer without the cookie of the browser that asked finds no challenge at all.
        fresh = authenticator.get(await _sign_in_options(client, csrf))
        client.cookies.delete(f"{SESSION_COOKIES['portal']}-passkey")
        stray = await _json_post(client, "/signin/passkey", fresh, csrf)
        assert stray.status_code == 400 and "expired or was already used" in _error(stray)


async def test_an_expired_challenge_is_refused(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, authenticator)).status_code == 200
    async with _anonymous_browser("portal") as (client, csrf):
        options = await _sign_in_options(client, csrf)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await AuthChallenge.update({AuthChallenge.expires_at: past}, force=True)
        late = await _json_post(client, "/signin/passkey", authenticator.get(options), csrf)
        assert late.status_code == 400 and "expired" in _error(late)


async def test_a_passkey_without_user_verification_is_refused(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        refused = await _register(client, csrf, authenticator, uv=False)
        assert refused.status_code == 400 and "did not verify you" in _error(refused)
        assert await Passkey.count() == 0
        assert (await _register(client, csrf, authenticator)).status_code == 200
    async with _anonymous_browser("portal") as (client, csrf):
        refused = await _passkey_sign_in(client, csrf, authenticator, uv=False)
        assert refused.status_code == 400 and "did not verify you" in _error(refused)
        assert SESSION_COOKIES["portal"] not in client.cookies


async def test_a_sign_count_that_does_not_grow_is_refused(db: None) -> None:
    """A counter that goes back means a cloned authenticator."""
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, authenticator)).status_code == 200
    async with _anonymous_browser("portal") as (client, csrf):
        assert (await _passkey_sign_in(client, csrf, authenticator, sign_count=5)).status_code == 200
        use_cookies(client, {})
        cloned = await _passkey_sign_in(client, csrf, authenticator, sign_count=5)
        assert cloned.status_code == 400
        assert SESSION_COOKIES["portal"] not in client.cookies


async def test_a_passkey_of_a_switched_off_account_does_not_sign_in(db: None) -> None:
    customer = await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, authenticator)).status_code == 200
    await CustomerAccount.update({CustomerAccount.active: False}).where(
        CustomerAccount.person_id == customer.person_id)
    async with _anonymous_browser("portal") as (client, csrf):
        refused = await _passkey_sign_in(client, csrf, authenticator)
        assert refused.status_code == 400 and "cannot sign in" in _error(refused)


async def test_failed_passkey_sign_ins_count_towards_the_rate_limit(db: None) -> None:
    await make_customer(ERIKA)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, authenticator)).status_code == 200
    async with _anonymous_browser("portal") as (client, csrf):
        for _ in range(get_settings().signin_max_failures):
            assert (await _passkey_sign_in(client, csrf, authenticator, uv=False)).status_code == 400
        before = await last_seq()
        locked = await _passkey_sign_in(client, csrf, authenticator)
        assert locked.status_code == 429 and "Too many sign-in attempts" in _error(locked)
        assert await events_since(before) == [], "the lock was recorded when it started, not again"
        assert SESSION_COOKIES["portal"] not in client.cookies


async def test_a_garbled_answer_gets_a_clear_error(db: None) -> None:
    async with _anonymous_browser("portal") as (client, csrf):
        await _sign_in_options(client, csrf)
        for body in ({}, {"id": "abc"}, [1, 2], "not json"):
            response = await _json_post(client, "/signin/passkey", body, csrf)
            assert response.status_code == 400 and _error(response)


# ---- removal ------------------------------------------------------------------------------------

async def test_a_customer_removes_a_passkey_and_nobody_else_can(db: None) -> None:
    await make_customer(ERIKA)
    await make_customer(MAX)
    authenticator = Authenticator()
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, authenticator, label="Kitchen tablet")).status_code == 200
    [row] = await Passkey.select(Passkey.id)
    passkey_id = str(row["id"])
    async with _customer_browser(MAX["email"]) as (client, csrf):
        before = await last_seq()
        response = await post_form(client, f"/account/passkeys/{passkey_id}/delete", {}, csrf)
        assert response.status_code == 404
        assert await events_since(before) == []
        assert "Kitchen tablet" not in (await client.get("/account/passkeys")).text
        assert (await post_form(client, "/account/passkeys/not-a-uuid/delete", {}, csrf)).status_code == 404
    assert await Passkey.count() == 1
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        page = await client.get("/account/passkeys")
        assert f'action="/account/passkeys/{passkey_id}/delete"' in page.text
        before = await last_seq()
        response = await post_form(client, f"/account/passkeys/{passkey_id}/delete", {}, csrf)
        assert response.status_code == 303 and response.headers["location"] == "/account/passkeys?removed=1"
        assert [(e.action, e.outcome) for e in await events_since(before)] == [("passkey_remove", "ok")]
        page = await client.get("/account/passkeys?removed=1")
        assert "Passkey removed." in page.text and "You have no passkeys yet." in page.text
    assert await Passkey.count() == 0
    async with _anonymous_browser("portal") as (client, csrf):
        gone = await _passkey_sign_in(client, csrf, authenticator)
        assert gone.status_code == 400 and "not registered here" in _error(gone)


async def test_a_staff_member_cannot_remove_a_customers_passkey(db: None) -> None:
    await make_customer(ERIKA)
    await make_staff("admin", "admin")
    async with _customer_browser(ERIKA["email"]) as (client, csrf):
        assert (await _register(client, csrf, Authenticator())).status_code == 200
    [row] = await Passkey.select(Passkey.id)
    async with _staff_browser("admin") as (client, csrf):
        response = await post_form(client, f"/account/passkeys/{row['id']}/delete", {}, csrf)
        assert response.status_code == 404
    assert await Passkey.count() == 1


# ---- guards and pages ---------------------------------------------------------------------------

@pytest.mark.parametrize("face", ["portal", "backoffice"])
async def test_the_passkey_pages_need_a_signed_in_account(face: str, db: None) -> None:
    async with _anonymous_browser(face) as (client, csrf):
        assert (await client.get("/account/passkeys")).headers["location"] == "/signin"
        response = await _json_post(client, "/account/passkeys/options", {"label": "x"}, csrf)
        assert response.status_code == 303
        assert await AuthChallenge.count() == 0


@pytest.mark.parametrize("face", ["portal", "backoffice"])
async def test_the_sign_in_page_offers_a_passkey(face: str, db: None) -> None:
    async with _anonymous_browser(face) as (client, _):
        page = await client.get("/signin")
    assert 'id="passkey-signin"' in page.text and 'src="/static/passkeys.js"' in page.text


async def test_the_passkey_script_is_served_under_the_content_security_policy(db: None) -> None:
    async with face_client("portal") as client:
        script = await client.get("/static/passkeys.js")
    assert script.status_code == 200
    assert "navigator.credentials.create" in script.text and "navigator.credentials.get" in script.text


def test_the_software_authenticator_makes_answers_the_library_accepts() -> None:
    """The test's authenticator is checked against py_webauthn directly, outside the app."""
    from webauthn import (  # noqa: PLC0415
        generate_authentication_options,
        generate_registration_options,
        options_to_json,
        verify_authentication_response,
        verify_registration_response,
    )

    user = uuid.uuid4().bytes
    options = generate_registration_options(rp_id=HOST, rp_name="Mutual", user_name="t", user_id=user)
    authenticator = Authenticator()
    created = verify_registration_response(
        credential=authenticator.create(json.loads(options_to_json(options))), expected_challenge=options.challenge,
        expected_rp_id=HOST, expected_origin=BASE_URL, require_user_verification=True)
    request = generate_authentication_options(rp_id=HOST)
    verified = verify_authentication_response(
        credential=authenticator.get(json.loads(options_to_json(request))), expected_challenge=request.challenge,
        expected_rp_id=HOST, expected_origin=BASE_URL, credential_public_key=created.credential_public_key,
        credential_current_sign_count=0, require_user_verification=True)
    assert verified.new_sign_count == 1
