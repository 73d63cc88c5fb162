"""Sign-up with email verification, emailed sign-in links and password reset on the portal, driven
over HTTP with a real SMTP server receiving the mails."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest

from server.crm.tables import Person
from server.identity.tables import CustomerAccount, EmailToken, Session
from server.mail import links_in
from server.settings import get_settings
from server.web.auth import SESSION_COOKIES
from tests.faces._client import (
    CUSTOMER_PASSWORD,
    Client,
    csrf_token,
    events_since,
    face_client,
    has_cookie,
    last_seq,
    make_customer,
    post_form,
    set_cookie_header,
    sign_in_attempt,
    summary,
)
from tests.smtp_server import SmtpServer
from tests.support import ERIKA, csrf_from

PORTAL_COOKIE = SESSION_COOKIES["portal"]
LINK_COOKIE = "__Host-mutual-portal-link"
JANA = {"given_name": "Jana", "family_name": "Beispiel", "email": "jana.beispiel@example.com"}
JANA_PASSWORD = "a-password-jana-chose"
ALERT_RE = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.DOTALL)
CSRF_VALUE_RE = re.compile(r'(name="_csrf_token" value=")[^"]+(")|("x-csrftoken": ")[^"]+(")')


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """A real SMTP server on loopback that the portal sends its mails to."""
    with SmtpServer() as server:
        monkeypatch.setenv("MUTUAL_SMTP_HOST", server.host)
        monkeypatch.setenv("MUTUAL_SMTP_PORT", str(server.port))
        monkeypatch.setenv("MUTUAL_SMTP_SECURITY", "none")
        get_settings.cache_clear()
        yield server
        monkeypatch.undo()
        get_settings.cache_clear()


@pytest.fixture(autouse=True)
def wired(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until portal/routes/__init__.py lists these routes, the tests add them (and the hook) themselves."""
    import portal.app
    from portal.routes import route_handlers
    from portal.routes.email_links import email_link_handlers, on_unverified
    from server.identity.service import customer_sign_in
    from server.web import signin_handlers

    handlers = route_handlers()
    if any(getattr(h, "name", None) == "portal-signup" for h in handlers):
        return
    own = {"portal-signin-form", "portal-signin", "portal-signout"}
    patched = [h for h in handlers if getattr(h, "name", None) not in own] + [
        *signin_handlers("portal", customer_sign_in, login_label="Email address", login_type="email",
                         home="/profile", page_extra={"email_link": True}, on_unverified=on_unverified),
        *email_link_handlers()]
    monkeypatch.setattr(portal.app, "route_handlers", lambda: patched)


@pytest.fixture(autouse=True)
async def no_links_left(db: None) -> None:
    """tests/conftest.py's `db` does not empty identity_email_token (yet)."""
    await EmailToken.delete(force=True)


# --- helpers -----------------------------------------------------------------------------------

def _alert(html: str) -> str:
    match = ALERT_RE.search(html)
    assert match, "the page shows no error message"
    return " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split())


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def _mails_to(smtp: SmtpServer, address: str) -> list[EmailMessage]:
    return [m for m in smtp.messages if m["To"] == address]


def _link(message: EmailMessage) -> str:
    """The path and query of the emailed link (the client talks to the app directly)."""
    found = [u for u in links_in(_text(message)) if "/signin/email/open" in u]
    assert len(found) == 1, f"expected one link in the mail, found {found}"
    parts = urlsplit(found[0])
    assert parts.scheme == "https" and parts.netloc == "testserver.local"
    return f"{parts.path}?{parts.query}"


def _token(path: str) -> str:
    return path.split("t=", 1)[1]


async def _page_csrf(client: Client, path: str) -> str:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return csrf_from(response.text)


async def _ask_link(client: Client, email: str, path: str = "/signin/email") -> str:
    """Ask for a link; returns the page's text."""
    csrf = await _page_csrf(client, path)
    response = await post_form(client, path, {"email": email}, csrf)
    assert response.status_code == 200, response.text
    return response.text


async def _sign_up(client: Client, values: dict[str, str], password: str = "") -> str:
    csrf = await _page_csrf(client, "/signup")
    response = await post_form(client, "/signup", {**values, "password": password}, csrf)
    assert response.status_code == 200, response.text
    return response.text


async def _open(client: Client, path: str) -> str:
    """Open the link's page and return the CSRF token of its form."""
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return csrf_from(response.text)


async def _redeem(client: Client, path: str, csrf: str | None = None):  # noqa: ANN202 - httpx.Response
    csrf = csrf or await csrf_token(client)
    return await post_form(client, "/signin/email/redeem", {"t": _token(path)}, csrf)


def _without_csrf(html: str) -> str:
    return CSRF_VALUE_RE.sub(lambda m: "".join(g or "" for g in m.groups()), html)


async def _account(email: str) -> dict:
    from server.identity.service import signin_email_index

    rows = await CustomerAccount.select().where(CustomerAccount.email_index == signin_email_index(email))
    assert len(rows) == 1
    return rows[0]


# --- sign-up -----------------------------------------------------------------------------------

async def test_sign_up_mails_a_verification_link_that_signs_the_new_customer_in(db: None, smtp: SmtpServer) -> None:
    async with face_client("portal") as client:
        before = await last_seq()
        page = await _sign_up(client, JANA)
        assert ("Check your inbox: we sent a link to confirm the address. "
                "It works for 10 minutes, in this browser.") in page
        assert JANA["email"] not in page and "Jana" not in page
        [mail] = _mails_to(smtp, JANA["email"])
        assert mail["Subject"] == "Confirm your email address"
        text = _text(mail)
        assert "10 minutes" in text and "same browser" in text
        assert "Jana" not in text and "Beispiel" not in text, "the mail holds no personal data but the address"
        link = _link(mail)
        account = await _account(JANA["email"])
        assert account["verified_at"] is None and account["password_hash"] == ""
        # A password sign-in is impossible (no password), and the profile needs a session.
        assert (await client.get("/profile")).headers["location"] == "/signin"
        csrf = await _open(client, link)
        response = await _redeem(client, link, csrf)
        assert response.status_code == 303 and response.headers["location"] == "/profile"
        assert has_cookie(response, PORTAL_COOKIE)
        profile = await client.get("/profile")
        assert profile.status_code == 200
        assert "Jana" in profile.text and "Beispiel" in profile.text and JANA["email"] in profile.text
        events = await events_since(before)
    assert ("create", "crm_person", "ok") in summary(events)
    create = next(e for e in events if e.action == "create")
    assert create.actor_kind == "system" and create.purpose == "customer_service"
    signin = next(e for e in events if e.action == "signin")
    assert signin.outcome == "ok" and signin.fields == {"method": "email_link"}
    assert (await _account(JANA["email"]))["verified_at"] is not None


async def test_sign_up_with_a_password_keeps_it_after_verification(db: None, smtp: SmtpServer) -> None:
    async with face_client("portal") as client:
        await _sign_up(client, JANA, JANA_PASSWORD)
        link = _link(_mails_to(smtp, JANA["email"])[0])
        assert (await _redeem(client, link, await _open(client, link))).status_code == 303
    async with face_client("portal") as other:
        assert (await sign_in_attempt(other, JANA["email"], JANA_PASSWORD)).status_code == 303


async def test_sign_up_with_an_address_that_has_an_account_only_mails_that_address(db: None,
                                                                                  smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    erika = {k: ERIKA[k] for k in ("given_name", "family_name", "email")}
    async with face_client("portal") as client:
        new = await _sign_up(client, JANA)
        before = await last_seq()
        existing = await _sign_up(client, {**erika, "given_name": "Someone"}, "another-password-1")
        events = await events_since(before)
    assert _without_csrf(new) == _without_csrf(existing), "the two answers differ"
    # Nothing is created or changed; the one event is the mailer reading the address on record.
    assert summary(events) == [("read", "crm_person", "ok")], "nothing is created or changed"
    assert (events[0].actor_kind, events[0].purpose) == ("system", "account_security")
    [mail] = _mails_to(smtp, ERIKA["email"])
    assert mail["Subject"] == "You already have an account"
    text = _text(mail)
    assert "https://testserver.local/signin/email" in text and "https://testserver.local/signin" in text
    assert "Someone" not in text and "Erika" not in text
    assert await CustomerAccount.count() == 2
    async with face_client("portal") as other:  # Erika's password still works, the new one does not
        assert (await sign_in_attempt(other, ERIKA["email"], CUSTOMER_PASSWORD)).status_code == 303
        assert (await sign_in_attempt(other, ERIKA["email"], "another-password-1")).status_code == 400


async def test_a_failed_account_leaves_no_person_behind(db: None, smtp: SmtpServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from server.identity import email_links

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the account could not be stored")

    monkeypatch.setattr(email_links, "create_customer_account", broken)
    async with face_client("portal") as client:
        before = await last_seq()
        await _sign_up(client, JANA)
        events = await events_since(before)
    assert await Person.count() == 0 and await CustomerAccount.count() == 0
    assert events == [], "the person's creation was rolled back, its audit event with it"
    assert smtp.messages == []


async def test_two_simultaneous_sign_ups_of_one_address_make_one_account(db: None, smtp: SmtpServer) -> None:
    async with face_client("portal") as one, face_client("portal") as two:
        csrfs = [await _page_csrf(c, "/signup") for c in (one, two)]
        answers = await asyncio.gather(*(post_form(c, "/signup", JANA, csrf) for c, csrf in zip((one, two), csrfs)))
    assert [a.status_code for a in answers] == [200, 200]
    assert await Person.count() == 1 and await CustomerAccount.count() == 1
    subjects = sorted(m["Subject"] for m in _mails_to(smtp, JANA["email"]))
    assert subjects == ["Confirm your email address", "You already have an account"]


async def test_sign_up_form_errors_name_each_problem_and_keep_the_input(db: None, smtp: SmtpServer) -> None:
    async with face_client("portal") as client:
        csrf = await _page_csrf(client, "/signup")
        response = await post_form(client, "/signup", {"given_name": "Jana", "family_name": "",
                                                       "email": "jana@example", "password": "short"}, csrf)
    assert response.status_code == 400
    assert "is required; enter the person&#39;s family name" in response.text
    assert "is not an email address" in response.text
    assert "Password</a>" in response.text and 'value="Jana"' in response.text
    assert 'value="short"' not in response.text, "a password is never sent back"
    assert smtp.messages == []
    assert await CustomerAccount.count() == 0


async def test_sign_ups_from_one_client_are_rate_limited(db: None, smtp: SmtpServer) -> None:
    limit = get_settings().signin_max_failures
    async with face_client("portal") as client:
        csrf = await _page_csrf(client, "/signup")
        for n in range(limit):
            response = await post_form(client, "/signup", {**JANA, "email": f"person{n}@example.com"}, csrf)
            assert response.status_code == 200, f"sign-up {n + 1}"
        refused = await post_form(client, "/signup", {**JANA, "email": "one.more@example.com"}, csrf)
    assert refused.status_code == 429
    minutes = get_settings().signin_window_minutes
    assert _alert(refused.text) == f"Too many sign-ups from here. Wait {minutes} minutes, then try again."
    assert len(smtp.messages) == limit


# --- sign-in links -----------------------------------------------------------------------------

async def test_an_emailed_link_signs_in_in_the_browser_that_asked_for_it(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        before = await last_seq()
        page = await _ask_link(client, ERIKA["email"])
        assert ("If an account exists for that address, we sent a sign-in link. "
                "It works for 10 minutes, in this browser.") in page
        header = set_cookie_header(await _post_again(client, ERIKA["email"]), LINK_COOKIE)
        attributes = [p.strip().lower() for p in header.split(";")[1:]]
        assert "secure" in attributes and "httponly" in attributes and "path=/" in attributes
        assert "samesite=lax" in attributes
        mails = _mails_to(smtp, ERIKA["email"])
        assert len(mails) == 2 and mails[0]["Subject"] == "Your sign-in link"
        link = _link(mails[0])
        assert "Erika" not in _text(mails[0])
        opened = await client.get(link)
        assert opened.status_code == 200 and 'type="submit" class="btn">Sign in</button>' in opened.text
        response = await _redeem(client, link, csrf_from(opened.text))
        assert response.status_code == 303 and response.headers["location"] == "/profile"
        assert (await client.get("/profile")).status_code == 200
        events = await events_since(before)
    requests = [e for e in events if e.action == "email_link_request"]
    assert len(requests) == 2 and all(e.fields == {} and e.subjects == [] and e.outcome == "ok"
                                      and e.actor_kind == "anonymous" for e in requests)
    assert ("signin", "session", "ok") in summary(events)
    assert await EmailToken.count().where(EmailToken.used_at.is_null()) == 0, \
        "one link in, the other link asked for is spent too"


async def _post_again(client: Client, email: str):  # noqa: ANN202
    csrf = await _page_csrf(client, "/signin/email")
    return await post_form(client, "/signin/email", {"email": email}, csrf)


async def test_asking_for_an_unknown_address_gets_the_same_answer_and_no_mail(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        known = await _ask_link(client, ERIKA["email"])
        unknown = await _ask_link(client, "nobody@example.org")
    assert _without_csrf(known) == _without_csrf(unknown)
    assert [m["To"] for m in smtp.messages] == [ERIKA["email"]]


async def test_a_link_opened_in_another_browser_is_refused_and_stays_usable_in_the_right_one(
        db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as asker, face_client("portal") as elsewhere:
        await _ask_link(asker, ERIKA["email"])
        link = _link(_mails_to(smtp, ERIKA["email"])[0])
        opened = await elsewhere.get(link)
        assert opened.status_code == 400
        assert "Open the link in the same browser where you asked for it" in _alert(opened.text)
        assert 'href="/signin/email"' in opened.text
        before = await last_seq()
        refused = await _redeem(elsewhere, link)
        assert refused.status_code == 400 and not has_cookie(refused, PORTAL_COOKIE)
        events = await events_since(before)
        assert summary(events) == [("email_link_redeem", "session", "failed")]
        assert events[0].fields == {"reason": "other_browser"}
        assert (await _redeem(asker, link, await _open(asker, link))).status_code == 303


async def test_a_link_works_once(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        await _ask_link(client, ERIKA["email"])
        link = _link(_mails_to(smtp, ERIKA["email"])[0])
        csrf = await _open(client, link)
        assert (await _redeem(client, link, csrf)).status_code == 303
        before = await last_seq()
        again = await _redeem(client, link, csrf)
        events = await events_since(before)
        reopened = await client.get(link)
    assert again.status_code == 400 and "has been used already" in _alert(again.text)
    assert [e.fields for e in events] == [{"reason": "used"}]
    assert reopened.status_code == 400


async def test_two_racing_redeems_of_one_link_sign_in_once(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        await _ask_link(client, ERIKA["email"])
        link = _link(_mails_to(smtp, ERIKA["email"])[0])
        csrf = await _open(client, link)
        results = await asyncio.gather(*(_redeem(client, link, csrf) for _ in range(4)))
    assert sorted(r.status_code for r in results) == [303, 400, 400, 400]
    assert await Session.count() == 1


async def test_an_expired_link_is_refused(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        await _ask_link(client, ERIKA["email"])
        link = _link(_mails_to(smtp, ERIKA["email"])[0])
        csrf = await _open(client, link)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await EmailToken.update({EmailToken.expires_at: past}, force=True)
        before = await last_seq()
        refused = await _redeem(client, link, csrf)
        events = await events_since(before)
        opened = await client.get(link)
    assert refused.status_code == 400 and "expired" in _alert(refused.text) and "10 minutes" in refused.text
    assert [e.fields for e in events] == [{"reason": "expired"}]
    assert opened.status_code == 400
    assert not has_cookie(refused, PORTAL_COOKIE)


async def test_links_expire_after_the_configured_minutes(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        await _ask_link(client, ERIKA["email"])
    [row] = await EmailToken.select()
    assert row["expires_at"] - row["created_at"] == dt.timedelta(minutes=get_settings().email_link_minutes)
    assert row["purpose"] == "signin" and len(row["token_hash"]) == 64
    assert _token(_link(_mails_to(smtp, ERIKA["email"])[0])) not in str(row), "only the hash is stored"


async def test_opening_a_link_uses_nothing_up(db: None, smtp: SmtpServer) -> None:
    """Mail scanners fetch links: only the button's POST redeems."""
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        await _ask_link(client, ERIKA["email"])
        link = _link(_mails_to(smtp, ERIKA["email"])[0])
        before = await last_seq()
        for _ in range(3):
            assert (await client.get(link)).status_code == 200
        assert await events_since(before) == []
        assert await Session.count() == 0
        assert (await _redeem(client, link, await _open(client, link))).status_code == 303


async def test_an_unknown_token_is_refused(db: None, smtp: SmtpServer) -> None:
    async with face_client("portal") as client:
        opened = await client.get("/signin/email/open?t=not-a-real-token-at-all")
        missing = await client.get("/signin/email/open")
        before = await last_seq()
        refused = await post_form(client, "/signin/email/redeem", {"t": "x" * 43}, await csrf_token(client))
        events = await events_since(before)
    assert opened.status_code == missing.status_code == refused.status_code == 400
    assert "This link is not valid" in _alert(refused.text)
    assert [e.fields for e in events] == [{"reason": "unknown"}]


async def test_asking_for_links_is_rate_limited_per_address(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    limit = get_settings().signin_max_failures
    async with face_client("portal") as client:
        csrf = await _page_csrf(client, "/signin/email")
        for n in range(limit):
            response = await post_form(client, "/signin/email", {"email": ERIKA["email"]}, csrf)
            assert response.status_code == 200, f"request {n + 1}"
        refused = await post_form(client, "/signin/email", {"email": ERIKA["email"]}, csrf)
        bad = await post_form(client, "/signin/email", {"email": "erika@"}, csrf)
    assert refused.status_code == 429
    minutes = get_settings().signin_window_minutes
    assert _alert(refused.text) == f"Too many emails asked for. Wait {minutes} minutes, then ask again."
    assert len(_mails_to(smtp, ERIKA["email"])) == limit
    assert bad.status_code == 400 and "is not an email address" in bad.text


# --- unverified accounts -----------------------------------------------------------------------

async def test_a_password_sign_in_to_an_unverified_account_mails_a_verification_link_instead(
        db: None, smtp: SmtpServer) -> None:
    async with face_client("portal") as signup:
        await _sign_up(signup, JANA, JANA_PASSWORD)
    async with face_client("portal") as client:
        before = await last_seq()
        response = await sign_in_attempt(client, JANA["email"], JANA_PASSWORD)
        events = await events_since(before)
        assert response.status_code == 200
        assert "Confirm your email address first: we sent you a new link." in response.text
        assert not has_cookie(response, PORTAL_COOKIE) and has_cookie(response, LINK_COOKIE)
        # The link goes to the address on record, which the mailer reads (audited).
        assert summary(events) == [("email_link_request", "session", "ok"), ("read", "crm_person", "ok")]
        mails = _mails_to(smtp, JANA["email"])
        assert len(mails) == 2 and mails[1]["Subject"] == "Confirm your email address"
        link = _link(mails[1])
        assert (await client.get("/profile")).headers["location"] == "/signin"
        assert (await _redeem(client, link, await _open(client, link))).status_code == 303
    account = await _account(JANA["email"])
    assert account["verified_at"] is not None and account["password_hash"] != ""


async def test_a_sign_in_link_to_an_unverified_account_clears_the_password_set_at_sign_up(
        db: None, smtp: SmtpServer) -> None:
    """Whoever signed up chose that password, and need not own the address."""
    async with face_client("portal") as squatter:
        await _sign_up(squatter, JANA, JANA_PASSWORD)
    async with face_client("portal") as owner:
        await _ask_link(owner, JANA["email"])
        link = _link(_mails_to(smtp, JANA["email"])[1])
        assert (await _redeem(owner, link, await _open(owner, link))).status_code == 303
        assert (await owner.get("/profile")).status_code == 200
    account = await _account(JANA["email"])
    assert account["verified_at"] is not None and account["password_hash"] == ""
    async with face_client("portal") as squatter:
        assert (await sign_in_attempt(squatter, JANA["email"], JANA_PASSWORD)).status_code == 400


# --- password reset ----------------------------------------------------------------------------

async def test_a_reset_link_signs_in_for_setting_a_new_password(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        page = await _ask_link(client, ERIKA["email"], "/signin/reset")
        assert "we sent a link to set a new password" in page
        [mail] = _mails_to(smtp, ERIKA["email"])
        assert mail["Subject"] == "Set a new password"
        link = _link(mail)
        opened = await client.get(link)
        assert "Set a new password</button>" in opened.text
        response = await _redeem(client, link, csrf_from(opened.text))
        assert response.status_code == 303 and response.headers["location"] == "/account/password"
    [session] = await Session.select()
    assert session["method"] == "reset_link" and session["stage"] == "full"


async def test_reset_requests_have_their_own_limit(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    limit = get_settings().signin_max_failures
    async with face_client("portal") as client:
        csrf = await _page_csrf(client, "/signin/reset")
        for _ in range(limit):
            assert (await post_form(client, "/signin/reset", {"email": ERIKA["email"]}, csrf)).status_code == 200
        refused = await post_form(client, "/signin/reset", {"email": ERIKA["email"]}, csrf)
        assert refused.status_code == 429
        assert "Too many password resets asked for." in _alert(refused.text)
        assert (await post_form(client, "/signin/email", {"email": ERIKA["email"]}, csrf)).status_code == 200


async def test_signed_in_customers_are_sent_home_from_the_forms(db: None, smtp: SmtpServer) -> None:
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        assert (await sign_in_attempt(client, ERIKA["email"], CUSTOMER_PASSWORD)).status_code == 303
        for path in ("/signup", "/signin/email", "/signin/reset"):
            response = await client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/profile", path



async def test_a_forged_host_header_does_not_reach_the_link_in_the_mail(db: None, smtp: SmtpServer) -> None:
    """The link points at the configured portal: a request made with `Host: evil.example` must not get
    a genuine mail with the attacker's address in it (a reset link to a look-alike site)."""
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        csrf = await _page_csrf(client, "/signin/reset")
        response = await post_form(client, "/signin/reset", {"email": ERIKA["email"]}, csrf,
                                   headers={"host": "evil.example"})
        assert response.status_code == 200
    mail = smtp.wait_for(lambda m: m["To"] == ERIKA["email"])
    assert "evil.example" not in _text(mail)
    _link(mail)  # https://testserver.local/signin/email/open?t=...


async def test_without_a_configured_origin_a_public_host_gets_no_link(db: None, smtp: SmtpServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    await make_customer(ERIKA)
    monkeypatch.delenv("MUTUAL_PORTAL_ORIGIN")
    get_settings.cache_clear()
    async with face_client("portal") as client:
        csrf = await _page_csrf(client, "/signin/email")
        response = await post_form(client, "/signin/email", {"email": ERIKA["email"]}, csrf)
    assert response.status_code == 503
    assert "MUTUAL_PORTAL_ORIGIN" in response.text and ERIKA["email"] not in response.text
    assert smtp.messages == []


async def test_a_sign_up_not_confirmed_within_a_day_is_erased(db: None, smtp: SmtpServer) -> None:
    """Storage limitation: names and an address never proven to belong together do not stay."""
    import datetime as dt

    async with face_client("portal") as client:
        await _sign_up(client, JANA)
    smtp.wait_for(lambda m: m["To"] == JANA["email"])
    await CustomerAccount.update({CustomerAccount.created_at: dt.datetime.now(dt.UTC)
                                  - dt.timedelta(hours=25)}, force=True)
    before = await last_seq()
    async with face_client("portal") as client:
        await _sign_up(client, {**JANA, "email": "someone.else@example.com"})
    smtp.wait_for(lambda m: m["To"] == "someone.else@example.com")
    assert await Person.count() == 1 and await CustomerAccount.count() == 1
    assert ("erase", "crm_person", "ok") in summary(await events_since(before))
