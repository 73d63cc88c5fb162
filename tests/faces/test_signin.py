"""Sign-in, sessions, CSRF and security headers on both faces, driven over HTTP."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

import pytest

from server.errors import TooManyAttempts
from server.identity import limits
from server.identity.tables import Session, SigninFailure
from server.settings import get_settings
from server.web.auth import SESSION_COOKIES
from tests.faces._client import (
    CUSTOMER_PASSWORD,
    HTMX,
    STAFF_PASSWORD,
    Client,
    cookie_value,
    csrf_token,
    events_since,
    face_client,
    has_cookie,
    last_seq,
    make_customer,
    make_staff,
    post_form,
    set_cookie_header,
    sign_in_attempt,
    signed_in,
    summary,
    use_cookies,
)
from tests.support import ERIKA

ALERT_RE = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.DOTALL)


@dataclass(frozen=True)
class Face:
    name: str
    login: str
    password: str
    unknown_login: str
    home: str
    """A page only a signed-in visitor of this face may see."""

    def other_unknown(self, n: int) -> str:
        """Unknown logins that differ from each other, so only the client's count can add up."""
        return f"{n}-{self.unknown_login}"

    @property
    def cookie(self) -> str:
        return SESSION_COOKIES[self.name]


BACKOFFICE = Face("backoffice", "admin", STAFF_PASSWORD, "nobody-here", "/people")
PORTAL = Face("portal", ERIKA["email"], CUSTOMER_PASSWORD, "nobody@example.org", "/profile")
FACES = [pytest.param(BACKOFFICE, id="backoffice"), pytest.param(PORTAL, id="portal")]


async def _accounts() -> None:
    await make_staff("admin", "admin")
    await make_customer(ERIKA)


def _alert(html: str) -> str:
    match = ALERT_RE.search(html)
    assert match, "the page shows no error message"
    return " ".join(match.group(1).split())


@pytest.mark.parametrize("face", FACES)
async def test_a_wrong_password_and_an_unknown_account_get_the_same_answer(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        csrf = await csrf_token(client)
        before = await last_seq()
        wrong = await sign_in_attempt(client, face.login, "not-the-password", csrf)
        unknown = await sign_in_attempt(client, face.unknown_login, face.password, csrf)
        events = await events_since(before)
    assert wrong.status_code == unknown.status_code == 400
    assert _alert(wrong.text) == _alert(unknown.text) == (
        "The sign-in details are not correct. Check them and try again.")
    assert wrong.text == unknown.text, "the two refusals differ somewhere in the page"
    assert not has_cookie(wrong, face.cookie) and not has_cookie(unknown, face.cookie)
    assert summary(events) == [("signin", "session", "failed")] * 2


@pytest.mark.parametrize("face", FACES)
async def test_after_the_failure_limit_even_the_right_password_is_refused_with_429(face: Face,
                                                                                   db: None) -> None:
    await _accounts()
    limit = get_settings().signin_max_failures
    async with face_client(face.name) as client:
        csrf = await csrf_token(client)
        start = await last_seq()
        for attempt in range(limit):
            response = await sign_in_attempt(client, face.login, f"wrong-{attempt}", csrf)
            assert response.status_code == 400, f"attempt {attempt + 1} of {limit}"
        # Each failure is recorded, and the lock once, when it starts.
        assert summary(await events_since(start)) == [("signin", "session", "failed")] * (limit - 1) + [
            ("signin_locked", "session", "denied"), ("signin", "session", "failed")]
        before = await last_seq()
        refused = await sign_in_attempt(client, face.login, face.password, csrf)
        assert refused.status_code == 429
        assert await events_since(before) == [], "refused attempts do not flood the audit log"
        minutes = get_settings().signin_window_minutes
        assert _alert(refused.text) == f"Too many sign-in attempts. Wait {minutes} minutes, then try again."
        assert not has_cookie(refused, face.cookie)
        assert (await client.get(face.home)).headers["location"] == "/signin"


@pytest.mark.parametrize("face", FACES)
async def test_a_successful_sign_in_does_not_wipe_the_client_address_failure_count(face: Face,
                                                                                   db: None) -> None:
    """Otherwise one known password would let a client guess the passwords of other accounts
    without limit, signing in to its own account between rounds."""
    await _accounts()
    limit = get_settings().signin_max_failures
    async with face_client(face.name) as client:
        csrf = await csrf_token(client)
        for attempt in range(limit - 1):
            await sign_in_attempt(client, face.other_unknown(attempt), "guess", csrf)
        assert (await sign_in_attempt(client, face.login, face.password, csrf)).status_code == 303
        assert (await sign_in_attempt(client, face.other_unknown(limit), "guess", csrf)).status_code == 400
        assert (await sign_in_attempt(client, face.other_unknown(limit + 1), "guess", csrf)).status_code == 429


@pytest.mark.parametrize("face", FACES)
async def test_a_sign_in_post_without_csrf_token_is_refused_and_changes_nothing(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        await csrf_token(client)  # the CSRF cookie is there; only the token is missing
        before = await last_seq()
        response = await client.post("/signin", data={"login": face.login, "password": face.password})
        forged = await post_form(client, "/signin", {"login": face.login, "password": face.password},
                                 "0" * 128)
        assert response.status_code == forged.status_code == 403
        assert "This form has expired. Reload the page and send it again." in response.text
        assert not has_cookie(response, face.cookie) and not has_cookie(forged, face.cookie)
    assert await events_since(before) == []
    assert await Session.count() == 0
    assert await SigninFailure.count() == 0


async def test_a_signed_in_post_without_csrf_token_creates_nobody(db: None) -> None:
    await _accounts()
    async with face_client("backoffice") as client:
        await signed_in(client, "admin", STAFF_PASSWORD)
        before = await last_seq()
        response = await client.post("/people", data={"family_name": "Beispiel"})
        assert response.status_code == 403
        assert await events_since(before) == []


async def test_the_csrf_token_is_accepted_in_the_x_csrftoken_header_as_htmx_sends_it(db: None) -> None:
    await _accounts()
    async with face_client("backoffice") as client:
        csrf = await signed_in(client, "admin", STAFF_PASSWORD)
        response = await client.post("/people/search", data={"query": ERIKA["email"]},
                                     headers={**HTMX, "x-csrftoken": csrf})
    assert response.status_code == 200
    assert "Erika" in response.text


@pytest.mark.parametrize("face", FACES)
async def test_signing_in_sets_the_face_session_cookie_secure_httponly_for_the_whole_site(face: Face,
                                                                                          db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        response = await sign_in_attempt(client, face.login, face.password)
    assert response.status_code == 303
    header = set_cookie_header(response, face.cookie)
    attributes = {part.strip().split("=", 1)[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert "secure" in attributes and "httponly" in attributes
    assert attributes["path"] == "Path=/"
    assert "domain" not in attributes, "a __Host- cookie must not name a domain"
    assert attributes["samesite"].lower() in ("samesite=lax", "samesite=strict")
    other = SESSION_COOKIES["portal" if face.name == "backoffice" else "backoffice"]
    assert not has_cookie(response, other)


@pytest.mark.parametrize("face", FACES)
async def test_signing_out_ends_the_session_on_the_server(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        csrf = await signed_in(client, face.login, face.password)
        token = client.cookies[face.cookie]
        assert (await client.get(face.home)).status_code == 200
        before = await last_seq()
        response = await post_form(client, "/signout", {}, csrf)
        assert response.status_code == 303 and response.headers["location"] == "/signin"
        assert cookie_value(response, face.cookie) in ("", '""')
        assert summary(await events_since(before)) == [("signout", "session", "ok")]
        use_cookies(client, {face.cookie: token})  # a copy of the old cookie, kept by an attacker
        replay = await client.get(face.home)
    assert replay.status_code == 303 and replay.headers["location"] == "/signin"
    assert await Session.count() == 0


async def _token_of(client: Client, face: Face) -> str:
    await signed_in(client, face.login, face.password)
    return client.cookies[face.cookie]


async def test_a_staff_session_is_not_accepted_by_the_portal(db: None) -> None:
    await _accounts()
    async with face_client("backoffice") as staff_client:
        token = await _token_of(staff_client, BACKOFFICE)
    async with face_client("portal") as client:
        for name in SESSION_COOKIES.values():
            use_cookies(client, {name: token})
            response = await client.get("/profile")
            assert response.status_code == 303 and response.headers["location"] == "/signin", name


async def test_a_portal_session_is_not_accepted_by_the_backoffice(db: None) -> None:
    await _accounts()
    async with face_client("portal") as portal_client:
        token = await _token_of(portal_client, PORTAL)
    async with face_client("backoffice") as client:
        for name in SESSION_COOKIES.values():
            use_cookies(client, {name: token})
            response = await client.get("/people")
            assert response.status_code == 303 and response.headers["location"] == "/signin", name


def _assert_security_headers(headers: dict[str, str], where: str) -> None:
    csp = headers.get("content-security-policy", "")
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert csp, f"{where}: no Content-Security-Policy"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, f"{where}: {csp}"
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", f"{where}: {csp}"
    assert directives.get("script-src") == "script-src 'self'", f"{where}: {csp}"
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("referrer-policy") == "no-referrer", where
    policy = headers.get("permissions-policy", "")
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()"):
        assert feature in policy, f"{where}: Permissions-Policy lacks {feature}: {policy!r}"


@pytest.mark.parametrize("face", FACES)
async def test_pages_carry_the_security_headers(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        pages = {"sign-in page": await client.get("/signin")}
        await signed_in(client, face.login, face.password)
        pages["home page"] = await client.get(face.home)
        pages["htmx fragment"] = await client.get(face.home, headers=HTMX)
        pages["start redirect"] = await client.get("/")
    for where, response in pages.items():
        assert response.status_code in (200, 303), where
        _assert_security_headers(dict(response.headers), where)


@pytest.mark.parametrize("face", FACES)
async def test_error_pages_and_sign_in_redirects_carry_the_security_headers_too(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        pages = {"guard redirect": await client.get(face.home),
                 "404 page": await client.get("/no-such-page"),
                 "csrf refusal": await client.post("/signin", data={"login": "x", "password": "y"})}
    for where, response in pages.items():
        _assert_security_headers(dict(response.headers), where)


async def test_signing_in_again_in_the_same_browser_ends_the_old_session(db: None) -> None:
    """ASVS 7.2.4: a new token at every sign-in, and the one the browser held before stops working."""
    from server.identity.service import resume_session

    await make_customer(ERIKA)
    async with face_client("portal") as client:
        csrf = await csrf_token(client)
        first = await sign_in_attempt(client, ERIKA["email"], CUSTOMER_PASSWORD, csrf)
        old = cookie_value(first, SESSION_COOKIES["portal"])
        again = await post_form(client, "/signin", {"login": ERIKA["email"], "password": CUSTOMER_PASSWORD}, csrf)
        new = cookie_value(again, SESSION_COOKIES["portal"])
    assert again.status_code == 303 and new != old
    assert await resume_session("portal", old, "r") is None
    assert await resume_session("portal", new, "r") is not None
    assert await Session.count() == 1


async def test_guesses_from_elsewhere_do_not_lock_the_owner_out_until_many(db: None) -> None:
    """ASVS 6.1.1: five wrong passwords from a stranger's address lock that address, not the owner's;
    the account itself locks from anywhere only after four times as many."""
    from server.errors import SignInFailed, TooManyAttempts
    from server.identity.limits import WIDE_FACTOR
    from server.identity.service import customer_sign_in

    await make_customer(ERIKA)
    limit = get_settings().signin_max_failures
    for _ in range(limit):
        with pytest.raises(SignInFailed):
            await customer_sign_in(ERIKA["email"], "guess", "203.0.113.7", "r")
    with pytest.raises(TooManyAttempts):
        await customer_sign_in(ERIKA["email"], CUSTOMER_PASSWORD, "203.0.113.7", "r")
    assert (await customer_sign_in(ERIKA["email"], CUSTOMER_PASSWORD, "198.51.100.1", "r")).stage == "full"
    # Many strangers, each within their own free attempts, add up on the account itself.
    for n in range(limit * WIDE_FACTOR):
        with pytest.raises(SignInFailed):
            await customer_sign_in(ERIKA["email"], "guess", f"203.0.113.{100 + n // (limit - 1)}", "r")
    with pytest.raises(TooManyAttempts):
        await customer_sign_in(ERIKA["email"], CUSTOMER_PASSWORD, "198.51.100.1", "r")


async def test_a_failure_recorded_by_a_concurrent_request_locks_nobody_below_the_limit(db: None) -> None:
    """A request that reads the clock, then sees a row another request wrote a moment later, must not
    take that row for a lock (it did: two simultaneous sign-ups of one address got a 429)."""
    key = limits.limit_key("ip", "192.0.2.7")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    free = get_settings().signin_max_failures
    await SigninFailure.insert(*[SigninFailure(id=uuid.uuid4(), face="portal", key=key, at=later,
                                               kind="signup") for _ in range(free - 1)])
    await limits.check("signup", "portal", [key])  # one free attempt left: no wait
    await SigninFailure.insert(SigninFailure(id=uuid.uuid4(), face="portal", key=key, at=later, kind="signup"))
    with pytest.raises(TooManyAttempts):
        await limits.check("signup", "portal", [key])
