"""Staff single sign-on end to end over HTTP: the backoffice app (in process) against a REAL OpenID
provider process (oidc-provider-mock on 127.0.0.1, see tests/oidc_provider.py). The test plays the
browser: it posts the sign-in button, follows the forwarding page to the provider, submits the
provider's form, and brings the answer back to the callback."""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from backoffice.app import HERE as BACKOFFICE
from backoffice.routes import route_handlers
from server.db import is_sqlite
from server.identity import limits, oidc
from server.identity.service import revoke_all_sessions
from server.identity.tables import (
    AuthChallenge,
    ExternalIdentity,
    Session,
    SigninFailure,
    StaffAccount,
)
from server.settings import get_settings
from server.web import create_face_app
from server.web.auth import SESSION_COOKIES
from server.web.oidc import SSO_COOKIE, oidc_handlers
from tests.faces._client import (
    BASE_URL,
    Client,
    csrf_token,
    events_since,
    has_cookie,
    last_seq,
    make_app,
    make_staff,
    post_form,
    set_cookie_header,
    summary,
)
from tests.oidc_provider import OidcProvider
from tests.support import csrf_from

CALLBACK = f"{BASE_URL}/signin/sso/callback"
STAFF_COOKIE = SESSION_COOKIES["backoffice"]
ALERT_RE = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.DOTALL)
ADMINS = {"preferred_username": "oidc-admin", "groups": ["crm-admins"]}
# The provider says it asked for a second factor (RFC 8176 amr), so Mutual does not ask again.
PROVIDER_MFA = {"amr": ["pwd", "otp"]}


@pytest.fixture(scope="module")
def op() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def registered(op: OidcProvider) -> tuple[str, str]:
    return op.register_client([CALLBACK])


@pytest.fixture
def sso(op: OidcProvider, registered: tuple[str, str], db: None, monkeypatch: pytest.MonkeyPatch,
        ) -> Iterator[OidcProvider]:
    """The backoffice configured for the provider (groups crm-admins → admin, crm-sales → sales)."""
    _set_env(monkeypatch, op.env(*registered, team_claim="team"))
    yield op
    monkeypatch.undo()
    get_settings.cache_clear()


def _set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
async def no_sso_rows(db: None) -> None:
    """Tables the shared db fixture may not empty yet."""
    await ExternalIdentity.delete(force=True)
    await AuthChallenge.delete(force=True)


@asynccontextmanager
async def backoffice() -> AsyncIterator[Client]:
    """The backoffice over https (see face_client), with the SSO routes even before they are wired in."""
    app = make_app("backoffice")
    if not any(route.path == "/signin/sso" for route in app.routes):
        app = create_face_app("backoffice", "Backoffice", [*route_handlers(), *oidc_handlers()],
                              BACKOFFICE / "templates", BACKOFFICE / "static")
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url=BASE_URL,
                                                  follow_redirects=False) as client:
        yield client


async def start(client: Client) -> str:
    """Press the single sign-on button; return the provider URL the forwarding page goes to."""
    csrf = await csrf_token(client)
    response = await post_form(client, "/signin/sso", {}, csrf)
    assert response.status_code == 200, response.text
    refresh = response.headers["refresh"]
    assert refresh.startswith("0; url=")
    url = refresh.removeprefix("0; url=")
    assert f'href="{url.replace("&", "&amp;")}"' in response.text, "the page links to the provider too"
    return url


def callback_path(location: str) -> str:
    """The provider sent the browser to our callback: the same request, made to the app."""
    assert location.startswith(CALLBACK + "?"), location
    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}"


async def sign_in(client: Client, op: OidcProvider, sub: str, claims: dict[str, Any],
                  amr: dict[str, Any] = PROVIDER_MFA) -> httpx.Response:
    """Sign in at the provider; by default its ID token says it asked for a second factor (amr)."""
    url = await start(client)
    op.set_user(sub, {**amr, **claims})
    return await client.get(callback_path(op.authorize(url, sub)))


def alert(html: str) -> str:
    match = ALERT_RE.search(html)
    assert match, "the page shows no error message"
    return " ".join(match.group(1).split())


async def account(username: str) -> dict[str, Any] | None:
    rows = await StaffAccount.select().where(StaffAccount.username == username)
    return rows[0] if rows else None


def new_sub() -> str:
    return f"sub-{uuid.uuid4().hex[:12]}"


# ---- the journey --------------------------------------------------------------------------------------

async def test_a_first_sso_sign_in_provisions_the_account_and_opens_a_full_session(sso: OidcProvider) -> None:
    sub = new_sub()
    async with backoffice() as client:
        csrf = await csrf_token(client)
        response = await post_form(client, "/signin/sso", {}, csrf)
        assert response.status_code == 200
        cookie = set_cookie_header(response, SSO_COOKIE)
        assert all(part in cookie.lower() for part in ("secure", "httponly", "samesite=lax", "path=/"))
        assert "max-age=600" in cookie.lower()
        url = response.headers["refresh"].removeprefix("0; url=")
        assert url.startswith(f"{sso.issuer}/oauth2/authorize?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["response_type"] == "code" and query["redirect_uri"] == CALLBACK
        assert query["client_id"] == get_settings().oidc_client_id
        assert "openid" in query["scope"].split()
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32 and query["state"] != query["nonce"]
        handle = client.cookies.get(SSO_COOKIE)
        assert handle and handle not in url, "the cookie holds a handle, not the state"
        challenge = await AuthChallenge.select().where(AuthChallenge.kind == "oidc")
        assert len(challenge) == 1 and handle not in challenge[0]["handle_hash"]

        sso.set_user(sub, {**ADMINS, **PROVIDER_MFA, "email": "erika.mustermann@example.org"})
        before = await last_seq()
        done = await client.get(callback_path(sso.authorize(url, sub)))
        events = await events_since(before)

        assert done.status_code == 303 and done.headers["location"] == "/"
        assert has_cookie(done, STAFF_COOKIE)
        assert "max-age=0" in set_cookie_header(done, SSO_COOKIE).lower(), "the ceremony cookie is cleared"
        assert summary(events) == [("sso_account_create", "session", "ok"), ("signin", "session", "ok")]
        assert events[-1].fields == {"method": "oidc"} and events[-1].actor_kind == "staff"
        text = repr([(e.fields, e.subjects) for e in events])
        assert "oidc-admin" not in text and "erika" not in text and sub not in text

        home = await client.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/people"
        people = await client.get("/people")
        assert people.status_code == 200 and "Sign out oidc-admin" in people.text

    created = await account("oidc-admin")
    assert created is not None
    assert created["roles"] == "admin" and created["password_hash"] == "" and created["team"] is None
    links = await ExternalIdentity.select()
    assert [link["account_id"] for link in links] == [created["id"]]
    assert sub not in links[0]["subject_hash"] and sso.issuer not in links[0]["subject_hash"]
    assert links[0]["subject_hash"].startswith("signin-")
    sessions = await Session.select().where(Session.account_id == created["id"])
    assert [(s["stage"], s["method"], s["face"]) for s in sessions] == [("full", "oidc", "backoffice")]
    assert await AuthChallenge.count() == 0, "the challenge is used up"


async def test_the_role_comes_from_the_mapped_group_and_the_team_from_its_claim(sso: OidcProvider) -> None:
    async with backoffice() as client:
        done = await sign_in(client, sso, new_sub(),
                             {"preferred_username": "Oidc-Sales", "groups": ["staff", "crm-sales"],
                              "team": "north"})
        assert done.status_code == 303
        assert (await client.get("/people")).status_code == 200
        assert (await client.get("/audit")).status_code == 403, "sales is not compliance"
    created = await account("oidc-sales")
    assert created is not None and created["roles"] == "sales" and created["team"] == "north"


async def test_a_second_sign_in_reuses_the_account_and_follows_the_provider_s_roles(sso: OidcProvider) -> None:
    sub = new_sub()
    claims = {"preferred_username": "oidc-mover", "groups": ["crm-sales"], "team": "north"}
    async with backoffice() as client:
        assert (await sign_in(client, sso, sub, claims)).status_code == 303
        first = await account("oidc-mover")
        # Signed in already, the button just leads home.
        csrf = csrf_from((await client.get("/people")).text)
        assert (await post_form(client, "/signin/sso", {}, csrf)).headers["location"] == "/"
    async with backoffice() as client:  # another day, another browser
        before = await last_seq()
        # The provider renamed the user meanwhile: the link (issuer and sub) is what counts.
        again = await sign_in(client, sso, sub, {**claims, "preferred_username": "renamed",
                                                 "groups": ["crm-admins", "crm-sales"], "team": "south"})
        events = await events_since(before)
        assert again.status_code == 303
        assert summary(events) == [("sso_roles_change", "session", "ok"), ("signin", "session", "ok")]
        assert events[0].fields == {"roles": "admin,sales", "source": "oidc", "team": "changed"}
        assert (await client.get("/")).headers["location"] == "/people"
    second = await account("oidc-mover")
    assert first is not None and second is not None and second["id"] == first["id"]
    assert second["roles"] == "admin,sales" and second["team"] == "south"
    assert await account("renamed") is None
    assert await StaffAccount.count() == 1 and await ExternalIdentity.count() == 1
    assert await Session.count().where(Session.account_id == first["id"]) == 2


async def test_two_simultaneous_first_sign_ins_of_one_person_make_one_account(sso: OidcProvider) -> None:
    """Two browsers come back from the provider at once for a person Mutual has not met: one account,
    one link, two sessions (on PostgreSQL the second used to fail on the unique user name: a 500)."""
    sub = new_sub()
    claims = {"preferred_username": "oidc-twice", "groups": ["crm-sales"], **PROVIDER_MFA}
    async with backoffice() as one, backoffice() as two:
        urls = [await start(client) for client in (one, two)]
        sso.set_user(sub, claims)
        paths = [callback_path(sso.authorize(url, sub)) for url in urls]
        answers = await asyncio.gather(one.get(paths[0]), two.get(paths[1]))
    assert [a.status_code for a in answers] == [303, 303], [a.text[:300] for a in answers]
    created = await account("oidc-twice")
    assert created is not None
    assert await StaffAccount.count() == 1 and await ExternalIdentity.count() == 1
    assert await Session.count().where(Session.account_id == created["id"]) == 2


async def test_a_first_sign_in_that_finds_its_name_just_taken_by_the_same_person_signs_in(
        sso: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other timing of the race above: the other browser's sign-in commits between this one's link
    lookup and its check for a taken user name (PostgreSQL, read committed)."""
    if is_sqlite():
        pytest.skip("SQLite lets one writer at a time through: the two sign-ins cannot interleave")
    sub = new_sub()
    claims = {"preferred_username": "oidc-between", "groups": ["crm-sales"], **PROVIDER_MFA}
    real = oidc.flow._provision
    calls = 0

    async def other_browser() -> int:
        async with backoffice() as other:
            return (await sign_in(other, sso, sub, claims)).status_code

    async def provision_after_the_other(*args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:  # outside this request's transaction (a fresh context), as another process would
            assert await asyncio.create_task(other_browser(), context=contextvars.Context()) == 303
        return await real(*args, **kwargs)

    monkeypatch.setattr(oidc.flow, "_provision", provision_after_the_other)
    async with backoffice() as client:
        answer = await sign_in(client, sso, sub, claims)
    assert answer.status_code == 303, alert(answer.text)
    assert await StaffAccount.count() == 1 and await ExternalIdentity.count() == 1
    assert await Session.count() == 2


async def test_an_unexpected_error_in_a_returning_sign_in_is_not_retried(sso: OidcProvider,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sub = new_sub()
    claims = {"preferred_username": "oidc-returning", "groups": ["crm-sales"], **PROVIDER_MFA}
    async with backoffice() as client:
        assert (await sign_in(client, sso, sub, claims)).status_code == 303
    calls = 0

    async def broken(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a fault that is not a race")

    monkeypatch.setattr(oidc.flow, "_link_and_open", broken)
    async with backoffice() as client:
        answer = await sign_in(client, sso, sub, claims)
    assert answer.status_code == 500 and calls == 1


async def test_claims_with_no_mutual_role_are_refused_and_take_the_roles_away(sso: OidcProvider) -> None:
    sub = new_sub()
    async with backoffice() as client:
        before = await last_seq()
        refused = await sign_in(client, sso, new_sub(), {"preferred_username": "oidc-nobody",
                                                         "groups": ["crm-readers"]})
        events = await events_since(before)
        assert refused.status_code == 400
        assert alert(refused.text) == ("Your account at the identity provider has no role for Mutual; "
                                       "ask an administrator.")
        assert not has_cookie(refused, STAFF_COOKIE)
        assert summary(events) == [("signin_sso", "session", "failed")]
        assert events[0].fields == {"reason": "no_role"} and events[0].actor_kind == "anonymous"
        assert 'action="/signin"' in refused.text, "the sign-in page again, with the password form"
        assert await account("oidc-nobody") is None

        # Someone who had a role and lost it at the provider loses it here too, sessions included.
        assert (await sign_in(client, sso, sub, {"preferred_username": "oidc-leaver",
                                                 "groups": ["crm-sales"]})).status_code == 303
        assert await Session.count() == 1
    async with backoffice() as client:
        lost = await sign_in(client, sso, sub, {"preferred_username": "oidc-leaver", "groups": []})
        assert lost.status_code == 400 and "no role for Mutual" in alert(lost.text)
    leaver = await account("oidc-leaver")
    assert leaver is not None and leaver["roles"] == ""
    assert await Session.count() == 0


async def test_a_tampered_state_is_refused_and_uses_the_attempt_up(sso: OidcProvider) -> None:
    async with backoffice() as client:
        url = await start(client)
        sso.set_user("tamper", {**ADMINS, **PROVIDER_MFA})
        location = sso.authorize(url, "tamper")
        parts = urlsplit(location)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        other = "y" if query["state"].startswith("x") else "x"  # a state that differs from the real one
        forged = urlunsplit(parts._replace(query=urlencode({**query, "state": other + query["state"][1:]})))
        before = await last_seq()
        refused = await client.get(callback_path(forged))
        assert refused.status_code == 400 and "does not belong to the sign-in started" in alert(refused.text)
        assert [e.fields for e in await events_since(before)] == [{"reason": "state"}]
        retry = await client.get(callback_path(location))  # the real answer, too late
        assert retry.status_code == 400 and "expired or was already used" in alert(retry.text)
    assert await account("oidc-admin") is None


async def test_a_replayed_callback_is_refused(sso: OidcProvider) -> None:
    async with backoffice() as client:
        url = await start(client)
        handle = client.cookies.get(SSO_COOKIE)
        sso.set_user("replay", {**ADMINS, **PROVIDER_MFA})
        path = callback_path(sso.authorize(url, "replay"))
        assert (await client.get(path)).status_code == 303
    async with backoffice() as attacker:  # with the captured cookie, code and state
        attacker.cookies.set(SSO_COOKIE, handle or "", domain="testserver.local")
        before = await last_seq()
        replayed = await attacker.get(path)
        assert replayed.status_code == 400 and "expired or was already used" in alert(replayed.text)
        assert not has_cookie(replayed, STAFF_COOKIE)
        assert [e.fields for e in await events_since(before)] == [{"reason": "expired"}]


async def test_the_callback_in_another_browser_is_refused(sso: OidcProvider) -> None:
    async with backoffice() as client:
        url = await start(client)
        sso.set_user("elsewhere", {**ADMINS, **PROVIDER_MFA})
        path = callback_path(sso.authorize(url, "elsewhere"))
    async with backoffice() as other:
        refused = await other.get(path)
        assert refused.status_code == 400 and "expired or was already used" in alert(refused.text)


async def test_a_refusal_at_the_provider_is_explained(sso: OidcProvider) -> None:
    async with backoffice() as client:
        url = await start(client)
        location = sso.authorize(url, "", deny=True)
        assert "error=access_denied" in location
        before = await last_seq()
        refused = await client.get(callback_path(location))
        assert refused.status_code == 400 and "did not sign you in" in alert(refused.text)
        assert [e.fields for e in await events_since(before)] == [{"reason": "provider_error"}]


async def test_an_expired_attempt_is_refused(sso: OidcProvider) -> None:
    async with backoffice() as client:
        url = await start(client)
        await AuthChallenge.update({AuthChallenge.expires_at: oidc.provider._now()}, force=True)
        sso.set_user("slow", {**ADMINS, **PROVIDER_MFA})
        refused = await client.get(callback_path(sso.authorize(url, "slow")))
        assert refused.status_code == 400 and "expired" in alert(refused.text)


async def test_a_user_name_held_by_a_local_account_is_not_taken_over(sso: OidcProvider) -> None:
    await make_staff("oidc-taken", "support")
    async with backoffice() as client:
        before = await last_seq()
        refused = await sign_in(client, sso, new_sub(), {"preferred_username": "OIDC-Taken",
                                                         "groups": ["crm-admins"]})
        assert refused.status_code == 400 and "already has the user name" in alert(refused.text)
        assert "oidc-taken" not in alert(refused.text).casefold()
        assert [e.fields for e in await events_since(before)] == [{"reason": "username_taken"}]
    local = await account("oidc-taken")
    assert local is not None and local["roles"] == "support"
    assert await ExternalIdentity.count() == 0


async def test_no_preferred_username_is_explained(sso: OidcProvider) -> None:
    async with backoffice() as client:
        refused = await sign_in(client, sso, new_sub(), {"groups": ["crm-admins"]})
        assert refused.status_code == 400 and "preferred_username" in alert(refused.text)


async def test_a_switched_off_account_stays_out(sso: OidcProvider) -> None:
    sub = new_sub()
    async with backoffice() as client:
        assert (await sign_in(client, sso, sub, {"preferred_username": "oidc-off",
                                                 "groups": ["crm-sales"]})).status_code == 303
        await StaffAccount.update({StaffAccount.active: False}).where(StaffAccount.username == "oidc-off")
        created = await account("oidc-off")
        assert created is not None
        await revoke_all_sessions(created["id"], "backoffice")
        refused = await sign_in(client, sso, sub, {"preferred_username": "oidc-off", "groups": ["crm-sales"]})
        assert refused.status_code == 400 and "switched off" in alert(refused.text)


async def test_a_wrong_client_secret_fails_at_the_token_endpoint(sso: OidcProvider,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUTUAL_OIDC_CLIENT_SECRET", "not-the-secret")
    get_settings.cache_clear()
    async with backoffice() as client:
        before = await last_seq()
        refused = await sign_in(client, sso, new_sub(), ADMINS)
        assert refused.status_code == 400 and "did not confirm the sign-in" in alert(refused.text)
        assert [e.fields for e in await events_since(before)] == [{"reason": "exchange"}]


async def test_the_redirect_uri_follows_the_configured_origin(sso: OidcProvider,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUTUAL_BACKOFFICE_ORIGIN", "https://staff.example.org")
    get_settings.cache_clear()
    async with backoffice() as client:
        url = await start(client)
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["https://staff.example.org/signin/sso/callback"]


async def test_the_sign_in_page_offers_single_sign_on_when_configured(sso: OidcProvider) -> None:
    async with backoffice() as client:
        page = await client.get("/signin")
    assert 'action="/signin/sso"' in page.text and "Sign in with Mock ID" in page.text


# ---- configuration ------------------------------------------------------------------------------------

async def test_without_a_provider_both_routes_answer_404(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUTUAL_OIDC_ISSUER", raising=False)
    get_settings.cache_clear()
    try:
        async with backoffice() as client:
            csrf = await csrf_token(client)
            assert "/signin/sso" not in (await client.get("/signin")).text
            before = await last_seq()
            started = await post_form(client, "/signin/sso", {}, csrf)
            back = await client.get("/signin/sso/callback?code=x&state=y")
            assert await events_since(before) == []
        for response in (started, back):
            assert response.status_code == 404
            assert "Single sign-on is not set up here" in response.text
            assert not has_cookie(response, SSO_COOKIE)
    finally:
        get_settings.cache_clear()


async def test_a_plain_http_provider_elsewhere_than_loopback_is_refused(db: None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _set_env(monkeypatch, {"MUTUAL_OIDC_ISSUER": "http://id.example.org", "MUTUAL_OIDC_CLIENT_ID": "mutual",
                           "MUTUAL_OIDC_ROLE_MAP": "crm-admins=admin"})
    try:
        assert oidc.configuration_problems() == [
            "MUTUAL_OIDC_ISSUER uses plain http, which is only allowed for a provider on 127.0.0.1 or "
            "localhost; use the provider's https URL"]
        async with backoffice() as client:
            csrf = await csrf_token(client)
            before = await last_seq()
            refused = await post_form(client, "/signin/sso", {}, csrf)
            assert refused.status_code == 503
            assert "MUTUAL_OIDC_ISSUER uses plain http" in alert(refused.text)
            assert [e.fields for e in await events_since(before)] == [{"reason": "config"}]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_transport_rules() -> None:
    for ok in ("https://id.example.org", "http://127.0.0.1:9400", "http://localhost:9400", "http://[::1]:9"):
        assert oidc.transport_problem(ok, "X") is None, ok
    for bad in ("http://id.example.org", "http://10.0.0.1", "ftp://id.example.org", "id.example.org", ""):
        assert oidc.transport_problem(bad, "X"), bad


async def test_an_unreachable_provider_is_explained(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.processes import free_port

    _set_env(monkeypatch, {"MUTUAL_OIDC_ISSUER": f"http://127.0.0.1:{free_port()}", "MUTUAL_OIDC_CLIENT_ID": "m",
                           "MUTUAL_OIDC_ROLE_MAP": "crm-admins=admin"})
    try:
        async with backoffice() as client:
            csrf = await csrf_token(client)
            refused = await post_form(client, "/signin/sso", {}, csrf)
            assert refused.status_code == 503 and "cannot be reached" in alert(refused.text)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


# ---- ID token validation, with tokens made here -------------------------------------------------------

ISSUER = "https://id.example.org"
CLIENT = "mutual-client"
NONCE = "n" * 43
PROVIDER = oidc.Provider(issuer=ISSUER, authorization_endpoint=f"{ISSUER}/auth", token_endpoint=f"{ISSUER}/token",
                         jwks_uri=f"{ISSUER}/jwks-test", algorithms=("RS256",), token_auth="client_secret_basic")


@pytest.fixture
def signing_key(monkeypatch: pytest.MonkeyPatch) -> RSAKey:
    """The provider's key; its key set is what `_get_json` fetches from the jwks_uri."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    published = {"set": KeySet([key])}
    fetches: list[str] = []

    async def fake_get_json(url: str, what: str) -> dict[str, Any]:
        fetches.append(url)
        return published["set"].as_dict()  # type: ignore[return-value]

    monkeypatch.setattr(oidc.provider, "_get_json", fake_get_json)
    monkeypatch.setattr(oidc.provider, "_keys", {})
    key.published = published  # type: ignore[attr-defined]
    key.fetches = fetches  # type: ignore[attr-defined]
    return key


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "s-1", "aud": CLIENT, "exp": now + 300, "iat": now, "nonce": NONCE}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def token(key: Any, payload: dict[str, Any], alg: str = "RS256", kid: str | None = "k1") -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, payload, key, algorithms=[alg])


async def test_a_good_id_token_passes(signing_key: RSAKey) -> None:
    got = await oidc.validate_id_token(PROVIDER, CLIENT, token(signing_key, claims()), NONCE)
    assert got["sub"] == "s-1"
    multi = claims(aud=[CLIENT, "other"], azp=CLIENT)
    assert (await oidc.validate_id_token(PROVIDER, CLIENT, token(signing_key, multi), NONCE))["azp"] == CLIENT


@pytest.mark.parametrize("payload", [
    pytest.param(claims(iss="https://evil.example.org"), id="other-issuer"),
    pytest.param(claims(aud="someone-else"), id="other-audience"),
    pytest.param(claims(aud=[CLIENT, "other"]), id="two-audiences-without-azp"),
    pytest.param(claims(azp="someone-else"), id="other-authorized-party"),
    pytest.param(claims(exp=int(time.time()) - 120), id="expired"),
    pytest.param(claims(iat=int(time.time()) + 600), id="issued-in-the-future"),
    pytest.param(claims(iat=int(time.time()) - 3600), id="issued-long-ago"),
    pytest.param(claims(nonce="m" * 43), id="other-nonce"),
    pytest.param(claims(nonce=None), id="no-nonce"),
    pytest.param(claims(sub=None), id="no-subject"),
    pytest.param(claims(exp=None), id="no-expiry"),
])
async def test_a_bad_id_token_is_refused(signing_key: RSAKey, payload: dict[str, Any]) -> None:
    with pytest.raises(oidc.SsoFailed) as refused:
        await oidc.validate_id_token(PROVIDER, CLIENT, token(signing_key, payload), NONCE)
    assert refused.value.reason == "token" and str(refused.value) == oidc.MSG_TOKEN


async def test_a_token_signed_by_another_key_is_refused(signing_key: RSAKey) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(oidc.SsoFailed):
        await oidc.validate_id_token(PROVIDER, CLIENT, token(stranger, claims()), NONCE)


async def test_unsigned_and_secret_signed_tokens_are_refused(signing_key: RSAKey) -> None:
    secret = OctKey.import_key("the-client-secret-the-client-secret")
    hs256 = token(secret, claims(), alg="HS256")
    unsigned = ".".join(hs256.split(".")[:2]) + "."
    header_none = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    for forged in (hs256, unsigned, f"{header_none}.{hs256.split('.')[1]}."):
        with pytest.raises(oidc.SsoFailed):
            await oidc.validate_id_token(PROVIDER, CLIENT, forged, NONCE)


async def test_rotated_provider_keys_are_fetched_again(signing_key: RSAKey,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert await oidc.validate_id_token(PROVIDER, CLIENT, token(signing_key, claims()), NONCE)
    assert len(signing_key.fetches) == 1  # type: ignore[attr-defined]
    new_key = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    signing_key.published["set"] = KeySet([signing_key, new_key])  # type: ignore[attr-defined]
    monkeypatch.setattr(oidc.provider, "KEYS_REFETCH_SECONDS", 0)
    assert await oidc.validate_id_token(PROVIDER, CLIENT, token(new_key, claims(), kid="k2"), NONCE)
    assert len(signing_key.fetches) == 2  # type: ignore[attr-defined]
    unknown = RSAKey.generate_key(2048, parameters={"kid": "k3"})
    with pytest.raises(oidc.SsoFailed):
        await oidc.validate_id_token(PROVIDER, CLIENT, token(unknown, claims(), kid="k3"), NONCE)


# ---- the second factor: the provider's, or Mutual's own -------------------------------------------------

async def test_without_amr_the_provider_is_assumed_to_have_asked_for_a_password_only(sso: OidcProvider) -> None:
    """ASVS 6.8.4's fallback: no amr claim, so Mutual asks for its own second factor (first: enrol)."""
    async with backoffice() as client:
        response = await sign_in(client, sso, new_sub(), ADMINS, amr={})
        assert response.status_code == 303 and response.headers["location"] == "/signin/enrol"
        assert (await client.get("/people")).headers["location"] == "/signin"
        page = await client.get("/signin/enrol")
        assert page.status_code == 200 and 'id="totp-secret"' in page.text


async def test_a_password_only_amr_is_not_a_second_factor(sso: OidcProvider) -> None:
    async with backoffice() as client:
        response = await sign_in(client, sso, new_sub(), ADMINS, amr={"amr": ["pwd"]})
        assert response.headers["location"] == "/signin/enrol"


@pytest.mark.parametrize(("mode", "amr", "location"), [
    ("provider", {}, "/"),  # the provider enforces MFA for everyone: trusted without amr
    ("mutual", PROVIDER_MFA, "/signin/enrol"),  # always Mutual's own code
])
async def test_mutual_oidc_mfa_chooses_whose_second_factor_counts(sso: OidcProvider, monkeypatch: pytest.MonkeyPatch,
                                                                 mode: str, amr: dict[str, Any],
                                                                 location: str) -> None:
    monkeypatch.setenv("MUTUAL_OIDC_MFA", mode)
    get_settings.cache_clear()
    async with backoffice() as client:
        response = await sign_in(client, sso, new_sub(), ADMINS, amr=amr)
        assert response.headers["location"] == location


@pytest.mark.parametrize(("amr", "two_factors"), [
    (["mfa"], True), (["pwd", "otp"], True), (["hwk", "pin"], True), (["pwd", "fpt"], True),
    (["hwk"], False), (["otp"], False), (["pwd"], False), (["pwd", "kba"], False), ("mfa", True), (None, False),
])
def test_amr_counts_as_a_second_factor_only_when_it_shows_two(amr: Any, two_factors: bool) -> None:
    from server.identity.oidc import provider_did_mfa

    assert provider_did_mfa({"amr": amr}) is two_factors


async def test_reloading_the_callback_after_signing_in_goes_home_uncounted_and_unaudited(sso: OidcProvider) -> None:
    async with backoffice() as client:
        url = await start(client)
        sso.set_user("reloader", {**ADMINS, **PROVIDER_MFA})
        path = callback_path(sso.authorize(url, "reloader"))
        assert (await client.get(path)).status_code == 303
        before = await last_seq()
        for _ in range(get_settings().signin_max_failures * limits.WIDE_FACTOR + 1):
            again = await client.get(path)  # the back button, or a reload
            assert again.status_code == 303 and again.headers["location"] == "/"
        assert await events_since(before) == []
    assert await SigninFailure.count() == 0


async def test_failed_callbacks_from_one_client_are_limited_but_the_provider_s_refusals_are_not(
        sso: OidcProvider) -> None:
    """Answers a client can make up alone (no attempt, a wrong state) count against its address; after
    the free ones even a real answer waits, and the refusals are not audited one by one."""
    # One office address is shared by many people: the free count of a wide key.
    limit = get_settings().signin_max_failures * limits.WIDE_FACTOR
    async with backoffice() as client:
        for _ in range(3):  # the provider's own answer (no role) is not the client's doing: not counted
            refused = await sign_in(client, sso, new_sub(), {"preferred_username": "oidc-nobody", "groups": []})
            assert refused.status_code == 400
        assert await SigninFailure.count() == 0
        for n in range(limit):  # a made-up answer, or a made-up error without an attempt
            query = f"code=x&state=guess-{n}" if n % 2 else "error=access_denied"
            made_up = await client.get(f"/signin/sso/callback?{query}")
            assert made_up.status_code == 400, f"made-up answer {n + 1}"
        url = await start(client)
        sso.set_user("late", {**ADMINS, **PROVIDER_MFA})
        before = await last_seq()
        refused = await client.get(callback_path(sso.authorize(url, "late")))
        assert refused.status_code == 429
        minutes = get_settings().signin_window_minutes
        assert alert(refused.text) == (f"Too many failed single sign-ins from here. Wait {minutes} minutes, "
                                       "then try again.")
        assert await events_since(before) == []
        assert not has_cookie(refused, STAFF_COOKIE)
    assert await account("oidc-admin") is None


# ---- recency: max_age and auth_time ---------------------------------------------------------------------

async def test_sso_asks_for_a_provider_sign_in_no_older_than_the_reauth_window(sso: OidcProvider,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async with backoffice() as client:
        url = await start(client)
    assert parse_qs(urlsplit(url).query)["max_age"] == [str(get_settings().reauth_minutes * 60)]
    _set_env(monkeypatch, {"MUTUAL_OIDC_MAX_AGE_MINUTES": "off"})
    async with backoffice() as client:
        url = await start(client)
    assert "max_age" not in parse_qs(urlsplit(url).query)


@pytest.mark.parametrize("sign_in_at_provider", ["recent", "old"])
async def test_an_old_sign_in_at_the_provider_is_no_recent_sign_in_here(sso: OidcProvider,
                                                                        sign_in_at_provider: str) -> None:
    """A provider that ignored max_age (its session is older) opens a session that may browse but not
    change how it signs in: someone at an unlocked browser cannot sign out and straight back in to
    add their own passkey."""
    minutes = 1 if sign_in_at_provider == "recent" else get_settings().reauth_minutes + 5
    auth_time = int(time.time()) - minutes * 60
    async with backoffice() as client:
        signed = await sign_in(client, sso, new_sub(), {**ADMINS, "auth_time": auth_time})
        assert signed.status_code == 303
        assert (await client.get("/people")).status_code == 200
        csrf = csrf_from((await client.get("/account")).text)
        ended = await post_form(client, "/account/sessions/revoke-others", {}, csrf)
    assert ended.status_code == (303 if sign_in_at_provider == "recent" else 403)
    rows = await Session.select(Session.authenticated_at)
    assert [int(r["authenticated_at"].timestamp()) for r in rows] == [auth_time]


async def test_without_auth_time_the_sign_in_counts_as_recent_only_when_max_age_is_off(
        sso: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider must name auth_time when asked with max_age; one that does not is taken to have
    signed the person in long ago (ASVS 6.8.4's fallback). With max_age off, the callback counts."""
    real = oidc.validate_id_token

    async def without_auth_time(*args: Any, **kwargs: Any) -> dict[str, Any]:
        # The mock provider (authlib) always names auth_time: take it out of the validated claims.
        claims = await real(*args, **kwargs)
        assert "auth_time" in claims
        return {name: value for name, value in claims.items() if name != "auth_time"}

    monkeypatch.setattr(oidc.flow, "validate_id_token", without_auth_time)
    for setting, recent in (("15", False), ("off", True)):
        _set_env(monkeypatch, {"MUTUAL_OIDC_MAX_AGE_MINUTES": setting})
        async with backoffice() as client:
            claims = {**ADMINS, "preferred_username": f"oidc-max-age-{setting}"}
            assert (await sign_in(client, sso, new_sub(), claims)).status_code == 303
            csrf = csrf_from((await client.get("/account")).text)
            ended = await post_form(client, "/account/sessions/revoke-others", {}, csrf)
        assert ended.status_code == (303 if recent else 403), setting


def test_the_authenticated_time_is_auth_time_never_later_than_now() -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    earlier = now - dt.timedelta(hours=2)
    for asked in (True, False):
        assert oidc.authenticated_time({"auth_time": int(earlier.timestamp())}, now, asked) == earlier
        assert oidc.authenticated_time({"auth_time": int(now.timestamp()) + 3600}, now, asked) == now
        assert oidc.authenticated_time({"auth_time": -10**30}, now, asked) == dt.datetime.fromtimestamp(
            0, dt.UTC)
        assert oidc.authenticated_time({"auth_time": 10**30}, now, asked) == now
    for absent in ({}, {"auth_time": "yesterday"}, {"auth_time": True}, {"auth_time": None}):
        assert oidc.authenticated_time(absent, now, asked_max_age=True) is None
        assert oidc.authenticated_time(absent, now, asked_max_age=False) == now
