"""Account security on both faces over HTTP: the session list and revoking sessions, idle and
absolute timeouts, changing or setting a password (with session rotation), sign-in without a
stored password, session fixation and rehashing of weaker password hashes."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

import argon2
import httpx
import pytest

from server.identity import session_cache
from server.identity.passwords import needs_rehash
from server.identity.service import (
    create_customer_account,
    customer_actor,
    open_session,
    signin_email_index,
    staff_actor,
    token_hash,
)
from server.identity.tables import CustomerAccount, Session, StaffAccount
from server.settings import get_settings
from server.web.auth import SESSION_COOKIES
from tests.faces._client import (
    CUSTOMER_PASSWORD,
    HOST,
    STAFF_PASSWORD,
    Client,
    Event,
    cookie_value,
    csrf_token,
    events_since,
    face_client,
    has_cookie,
    last_seq,
    make_customer,
    make_person,
    make_staff,
    post_form,
    sign_in_attempt,
    signed_in,
    summary,
    totp_code,
    use_cookies,
)
from tests.support import ERIKA, MAX, csrf_from

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0.0.0 Safari/537.36")
NEW_PASSWORD = "a few words in a row"
ROW_RE = re.compile(r'<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>.*?action="/account/sessions/([^"/]+)/revoke"',
                    re.DOTALL)
ALERT_RE = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.DOTALL)
FORM_ERRORS_RE = re.compile(r'<div class="error" role="alert" id="form-errors">(.*?)</div>', re.DOTALL)
GENERIC_FAILURE = "The sign-in details are not correct. Check them and try again."
PASSWORD_CHANGED = "/account/sessions?changed=password"


@dataclass(frozen=True)
class Face:
    name: str
    login: str
    password: str
    other_login: str
    home: str
    """A page only a signed-in visitor of this face may see."""
    method_label: str
    """How a password sign-in shows in the session list."""

    @property
    def cookie(self) -> str:
        return SESSION_COOKIES[self.name]


BACKOFFICE = Face("backoffice", "admin", STAFF_PASSWORD, "other", "/people", "Password and authenticator code")
PORTAL = Face("portal", ERIKA["email"], CUSTOMER_PASSWORD, MAX["email"], "/profile", "Password")
FACES = [pytest.param(BACKOFFICE, id="backoffice"), pytest.param(PORTAL, id="portal")]


@dataclass(frozen=True)
class Row:
    device: str
    method: str
    handle: str
    current: bool


# --- helpers --------------------------------------------------------------------------------------


async def _accounts() -> None:
    await make_staff("admin", "admin")
    await make_staff("other", "admin")
    await make_customer(ERIKA)
    await make_customer(MAX)


async def _account_row(face: Face, login: str) -> dict:
    if face.name == "backoffice":
        rows = await StaffAccount.select().where(StaffAccount.username == login)
    else:
        rows = await CustomerAccount.select().where(CustomerAccount.email_index == signin_email_index(login))
    assert rows, login
    return rows[0]


async def _password_hash(face: Face, login: str) -> str:
    return (await _account_row(face, login))["password_hash"]


async def _set_password_hash(face: Face, login: str, value: str) -> None:
    table = StaffAccount if face.name == "backoffice" else CustomerAccount
    account = await _account_row(face, login)
    await table.update({table.password_hash: value}).where(table.id == account["id"])


async def _extra_session(face: Face, login: str, method: str = "password", device: str = "Safari on iOS") -> str:
    """Another live session of an account, opened by the service (as another sign-in would), without
    spending an authenticator code."""
    account = await _account_row(face, login)
    actor = (staff_actor(account, "test") if face.name == "backoffice" else customer_actor(account, "test"))
    return (await open_session(face.name, account["id"], actor, method=method, device=device)).token


async def _security_events_since(seq: int) -> list[Event]:
    return [e for e in await events_since(seq) if e.entity == "session"]


async def _rows(client: Client) -> list[Row]:
    page = await client.get("/account/sessions")
    assert page.status_code == 200, page.status_code
    return [Row(" ".join(re.sub(r"<[^>]+>", " ", device).split()).replace(" (this browser)", ""),
                method.strip(), handle, "(this browser)" in device)
            for device, method, handle in ROW_RE.findall(page.text)]


async def _is_signed_in(face: Face, token: str) -> bool:
    """Whether a browser holding this cookie is signed in (asked from a client of its own)."""
    async with face_client(face.name) as client:
        use_cookies(client, {face.cookie: token})
        response = await client.get(face.home)
    if response.status_code == 303:
        assert response.headers["location"] == "/signin"
        return False
    assert response.status_code == 200, response.status_code
    return True


async def _session_exists(token: str) -> bool:
    return await Session.exists().where(Session.token_hash == token_hash(token))


def _alert(html: str) -> str:
    match = ALERT_RE.search(html)
    assert match, "the page shows no error message"
    return " ".join(match.group(1).split())


def _form_errors(html: str) -> str:
    match = FORM_ERRORS_RE.search(html)
    assert match, "the page shows no form errors"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


async def _sign_in_with_password(client: Client, face: Face, login: str, password: str) -> httpx.Response:
    """The password step only; for staff the result continues at the second step."""
    return await sign_in_attempt(client, login, password)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the session list -----------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
async def test_two_sign_ins_are_both_listed_and_this_browser_is_marked_once(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as first, face_client(face.name) as second:
        first.headers["user-agent"] = FIREFOX
        second.headers["user-agent"] = CHROME
        await signed_in(first, face.login, face.password)
        await signed_in(second, face.login, face.password)
        page = await first.get("/account/sessions")
        assert page.text.count("(this browser)") == 1
        rows = await _rows(first)
        assert sorted(r.device for r in rows) == ["Chrome on Windows", "Firefox on Linux"]
        assert [r.device for r in rows if r.current] == ["Firefox on Linux"]
        assert {r.method for r in rows} == {face.method_label}
        assert len({r.handle for r in rows}) == 2
        for token in (first.cookies[face.cookie], second.cookies[face.cookie]):
            assert token not in page.text and token_hash(token) not in page.text
        assert FIREFOX not in page.text and CHROME not in page.text
        assert 'action="/account/sessions/revoke-others"' in page.text
        overview = await first.get("/account")
        assert overview.status_code == 200 and "You are signed in 2 times." in overview.text
        theirs = [r for r in await _rows(second) if r.current]
        assert [r.device for r in theirs] == ["Chrome on Windows"]
    stored = await Session.select(Session.device).where(Session.face == face.name)
    assert sorted(r["device"] for r in stored) == ["Chrome on Windows", "Firefox on Linux"]


@pytest.mark.parametrize("face", FACES)
async def test_revoking_the_other_session_ends_it(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as first, face_client(face.name) as second:
        csrf = await signed_in(first, face.login, face.password)
        await signed_in(second, face.login, face.password)
        other = next(r for r in await _rows(first) if not r.current)
        before = await last_seq()
        response = await post_form(first, f"/account/sessions/{other.handle}/revoke", {}, csrf)
        assert response.status_code == 303 and response.headers["location"] == "/account/sessions?ended=one"
        assert not has_cookie(response, face.cookie)
        assert summary(await _security_events_since(before)) == [("session_revoke", "session", "ok")]
        gone = await second.get(face.home)
        assert gone.status_code == 303 and gone.headers["location"] == "/signin"
        assert not await _session_exists(second.cookies[face.cookie])
        assert (await first.get(face.home)).status_code == 200
        page = await first.get("/account/sessions?ended=one")
        assert "That session is signed out." in page.text
        rows = await _rows(first)
        assert len(rows) == 1 and rows[0].current
        assert 'action="/account/sessions/revoke-others"' not in page.text
        # a second try at the same handle finds nothing
        again = await post_form(first, f"/account/sessions/{other.handle}/revoke", {}, csrf)
        assert again.status_code == 404


@pytest.mark.parametrize("face", FACES)
async def test_revoking_a_session_of_another_account_is_404_and_it_stays_alive(face: Face, db: None) -> None:
    await _accounts()
    theirs = await _extra_session(face, face.other_login)
    their_handle = str((await Session.select(Session.handle).where(
        Session.token_hash == token_hash(theirs)))[0]["handle"])
    async with face_client(face.name) as client:
        csrf = await signed_in(client, face.login, face.password)
        before = await last_seq()
        for handle in (their_handle, str(uuid.uuid4()), "not-a-session"):
            response = await post_form(client, f"/account/sessions/{handle}/revoke", {}, csrf)
            assert response.status_code == 404, handle
            assert "There is no such session of yours. It may have ended already." in response.text
            assert not has_cookie(response, face.cookie)
        assert await _security_events_since(before) == []
        assert (await client.get(face.home)).status_code == 200
    assert await _is_signed_in(face, theirs)


@pytest.mark.parametrize("face", FACES)
async def test_signing_out_everywhere_else_leaves_only_this_session(face: Face, db: None) -> None:
    await _accounts()
    theirs = await _extra_session(face, face.other_login)
    async with face_client(face.name) as first, face_client(face.name) as second:
        csrf = await signed_in(first, face.login, face.password)
        await signed_in(second, face.login, face.password)
        third = await _extra_session(face, face.login)
        assert len(await _rows(first)) == 3
        before = await last_seq()
        response = await post_form(first, "/account/sessions/revoke-others", {}, csrf)
        assert response.status_code == 303 and response.headers["location"] == "/account/sessions?ended=others"
        events = await _security_events_since(before)
        assert summary(events) == [("session_revoke_others", "session", "ok")]
        assert events[0].fields == {"count": "2"}
        rows = await _rows(first)
        assert len(rows) == 1 and rows[0].current
        assert "Every other session is signed out." in (await first.get("/account/sessions?ended=others")).text
        assert (await first.get(face.home)).status_code == 200
        second_token = second.cookies[face.cookie]
    assert not await _is_signed_in(face, second_token)
    assert not await _is_signed_in(face, third)
    assert await _is_signed_in(face, theirs), "another account's session is not touched"
    account = await _account_row(face, face.login)
    assert await Session.count().where(Session.account_id == account["id"]) == 1


@pytest.mark.parametrize("face", FACES)
async def test_revoking_the_current_session_signs_out_here(face: Face, db: None) -> None:
    await _accounts()
    other = await _extra_session(face, face.login)
    async with face_client(face.name) as client:
        csrf = await signed_in(client, face.login, face.password)
        token = client.cookies[face.cookie]
        mine = next(r for r in await _rows(client) if r.current)
        before = await last_seq()
        response = await post_form(client, f"/account/sessions/{mine.handle}/revoke", {}, csrf)
        assert response.status_code == 303 and response.headers["location"] == "/signin"
        assert cookie_value(response, face.cookie) in ("", '""')
        assert summary(await _security_events_since(before)) == [("session_revoke", "session", "ok")]
        gone = await client.get(face.home)
        assert gone.status_code == 303 and gone.headers["location"] == "/signin"
    assert not await _session_exists(token)
    assert not await _is_signed_in(face, token)
    assert await _is_signed_in(face, other)


async def test_revoking_the_current_session_by_a_differently_written_handle_also_signs_out(db: None) -> None:
    """revoke_session parses the handle as a UUID (any case, braces, no dashes), but the handler
    recognises the current session by comparing strings, so it deletes this session yet answers as if
    another one ended, keeping the dead cookie."""
    await make_customer(ERIKA)
    async with face_client("portal") as client:
        csrf = await signed_in(client, ERIKA["email"], CUSTOMER_PASSWORD)
        mine = next(r for r in await _rows(client) if r.current)
        response = await post_form(client, f"/account/sessions/{mine.handle.upper()}/revoke", {}, csrf)
        assert response.status_code == 303
        assert response.headers["location"] == "/signin"
        assert cookie_value(response, PORTAL.cookie) in ("", '""')


# --- timeouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
async def test_an_idle_session_ends_and_is_deleted(face: Face, db: None) -> None:
    await _accounts()
    idle = dt.timedelta(minutes=get_settings().session_idle_minutes)
    dozing = await _extra_session(face, face.login)
    async with face_client(face.name) as client:
        await signed_in(client, face.login, face.password)
        # one session idle a minute past the limit, while this one stays in use
        await Session.update({Session.last_seen_at: _now() - idle - dt.timedelta(minutes=1)}).where(
            Session.token_hash == token_hash(dozing))
        rows = await _rows(client)
        assert len(rows) == 1 and rows[0].current, "an idle session is not listed"
        # just short of the limit, a session lives on and is touched
        token = client.cookies[face.cookie]
        await Session.update({Session.last_seen_at: _now() - idle + dt.timedelta(minutes=2)}).where(
            Session.token_hash == token_hash(token))
        # Moving last_seen_at back in time is no change real use makes (it only moves forward, so a cached
        # copy is never newer than the row) and the triggers do not watch it: forget the cached copy.
        session_cache.cache.clear()
        assert (await client.get(face.home)).status_code == 200
        seen = (await Session.select(Session.last_seen_at).where(
            Session.token_hash == token_hash(token)))[0]["last_seen_at"]
        assert _now() - seen < dt.timedelta(minutes=1)
    assert await _session_exists(dozing)
    assert not await _is_signed_in(face, dozing)
    assert not await _session_exists(dozing), "an idle session is deleted when it is next used"


@pytest.mark.parametrize("face", FACES)
async def test_a_session_ends_at_its_absolute_end_however_active(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        await signed_in(client, face.login, face.password)
        token = client.cookies[face.cookie]
        row = (await Session.select().where(Session.token_hash == token_hash(token)))[0]
        life = row["expires_at"] - row["created_at"]
        hours = dt.timedelta(hours=get_settings().session_absolute_hours)
        assert abs(life - hours) < dt.timedelta(seconds=2)
        await Session.update({Session.expires_at: _now() - dt.timedelta(seconds=1),
                              Session.last_seen_at: _now()}).where(Session.token_hash == token_hash(token))
        response = await client.get(face.home)
        assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert not await _session_exists(token)


# --- passwords ------------------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
async def test_changing_the_password_checks_it_and_rotates_the_session(face: Face, db: None) -> None:
    await _accounts()
    old_hash = await _password_hash(face, face.login)
    async with face_client(face.name) as client:
        csrf = await signed_in(client, face.login, face.password)
        old_token = client.cookies[face.cookie]
        form = await client.get("/account/password")
        assert form.status_code == 200
        assert '<label for="current">Current password</label>' in form.text
        before = await last_seq()
        refusals = {
            "wrong current": ({"current": "not-the-password", "password": NEW_PASSWORD},
                              "Current password the current password is not correct"),
            "common": ({"current": face.password, "password": "password1"},
                       "New password this password is on the list of the most common passwords; "
                       "choose another one"),
            "common in capitals": ({"current": face.password, "password": "  PassWord1 "},
                                   "the list of the most common passwords"),
            "too short": ({"current": face.password, "password": "seven77"},
                          "New password use at least 8 characters"),
            "too long": ({"current": face.password, "password": "x" * 129},
                         "New password use at most 128 characters"),
        }
        for case, (data, message) in refusals.items():
            refused = await post_form(client, "/account/password", data, csrf)
            assert refused.status_code == 400, case
            assert message in _form_errors(refused.text), case
            assert not has_cookie(refused, face.cookie), case
            assert 'name="current"' in refused.text, case
        assert await _security_events_since(before) == []
        assert await _password_hash(face, face.login) == old_hash
        assert client.cookies[face.cookie] == old_token

        saved = await post_form(client, "/account/password", {"current": face.password, "password": NEW_PASSWORD},
                                csrf)
        assert saved.status_code == 303 and saved.headers["location"] == PASSWORD_CHANGED
        new_token = cookie_value(saved, face.cookie)
        assert new_token and new_token != old_token
        assert summary(await _security_events_since(before)) == [("password_change", "session", "ok")]
        page = await client.get(PASSWORD_CHANGED)
        assert page.status_code == 200 and "Your password is changed." in page.text
        rows = await _rows(client)
        assert len(rows) == 1 and rows[0].current, "rotation keeps the session (and its handle), not a copy"
    assert await _password_hash(face, face.login) != old_hash
    assert not await _session_exists(old_token)
    assert not await _is_signed_in(face, old_token)
    assert await _is_signed_in(face, new_token)
    async with face_client(face.name) as client:
        old = await _sign_in_with_password(client, face, face.login, face.password)
        assert old.status_code == 400 and _alert(old.text) == GENERIC_FAILURE
        await signed_in(client, face.login, NEW_PASSWORD)
        assert (await client.get(face.home)).status_code == 200


@pytest.mark.parametrize("face", FACES)
async def test_an_account_without_password_sets_one_without_a_current_password(face: Face, db: None) -> None:
    if face.name == "backoffice":
        await make_staff("sso-only", "admin", mfa=False)
        login, method = "sso-only", "oidc"
        await _set_password_hash(face, login, "")
    else:
        person = await make_person(MAX)
        await create_customer_account(person, MAX["email"], password="")
        login, method = MAX["email"], "email_link"
    assert await _password_hash(face, login) == ""
    token = await _extra_session(face, login, method=method)
    async with face_client(face.name) as client:
        use_cookies(client, {face.cookie: token})
        overview = await client.get("/account")
        assert overview.status_code == 200 and "You have no password" in overview.text
        form = await client.get("/account/password")
        assert form.status_code == 200
        assert "Current password" not in form.text and 'name="current"' not in form.text
        assert "<h1>Set a password</h1>" in form.text
        csrf = csrf_from(form.text)
        common = await post_form(client, "/account/password", {"password": "password1"}, csrf)
        assert common.status_code == 400
        assert "the list of the most common passwords" in _form_errors(common.text)
        assert 'name="current"' not in common.text
        before = await last_seq()
        saved = await post_form(client, "/account/password", {"password": NEW_PASSWORD}, csrf)
        assert saved.status_code == 303 and saved.headers["location"] == PASSWORD_CHANGED
        assert cookie_value(saved, face.cookie) != token
        assert summary(await _security_events_since(before)) == [("password_change", "session", "ok")]
        form = await client.get("/account/password")
        assert '<label for="current">Current password</label>' in form.text
    assert await _password_hash(face, login) != ""
    async with face_client(face.name) as client:
        response = await _sign_in_with_password(client, face, login, NEW_PASSWORD)
        assert response.status_code == 303
        # staff without an authenticator go on to set one up; customers are in
        assert response.headers["location"] == ("/signin/enrol" if face.name == "backoffice" else "/profile")


@pytest.mark.parametrize("face", FACES)
async def test_guessing_the_current_password_is_rate_limited(face: Face, db: None) -> None:
    """The password form answers whether `current` is right: without a limit, whoever holds a session
    (a stolen cookie, an unlocked browser) can guess the account's password there at full speed, where
    the sign-in form would stop them after `signin_max_failures`."""
    await _accounts()
    limit = get_settings().signin_max_failures
    async with face_client(face.name) as client:
        csrf = await signed_in(client, face.login, face.password)
        for attempt in range(limit):
            wrong = await post_form(client, "/account/password",
                                    {"current": f"guess-number-{attempt}", "password": NEW_PASSWORD}, csrf)
            assert wrong.status_code == 400, attempt
        right = await post_form(client, "/account/password", {"current": face.password, "password": NEW_PASSWORD},
                                csrf)
        assert right.status_code == 429, right.status_code
        assert "Wait" in right.text


async def test_a_staff_password_built_on_the_user_name_is_refused(db: None) -> None:
    await make_staff("wilhelmina", "admin")
    async with face_client("backoffice") as client:
        csrf = await signed_in(client, "wilhelmina", STAFF_PASSWORD)
        refused = await post_form(client, "/account/password",
                                  {"current": STAFF_PASSWORD, "password": "Wilhelmina rides again"}, csrf)
        assert refused.status_code == 400
        assert "built on a word anyone could guess here" in _form_errors(refused.text)
        product = await post_form(client, "/account/password", {"current": STAFF_PASSWORD, "password": "Mutual2024!"},
                                  csrf)
        assert product.status_code == 400
        assert "built on a word anyone could guess here" in _form_errors(product.text)


@pytest.mark.parametrize("face", FACES)
async def test_an_old_session_cannot_give_an_account_without_password_a_password(face: Face, db: None) -> None:
    """Whoever finds an unlocked browser must not add a credential of their own (the rule behind
    requires_recent_signin, server/web/auth.py): with a password the current one is asked for, but an
    account without one (SSO-only staff, customers of emailed links and passkeys) is asked nothing,
    so an old session has to sign in again first, as for passkeys and revoking sessions."""
    if face.name == "backoffice":
        await make_staff("sso-only", "admin", mfa=False)
        login = "sso-only"
        await _set_password_hash(face, login, "")
    else:
        person = await make_person(MAX)
        await create_customer_account(person, MAX["email"], password="")
        login = MAX["email"]
    token = await _extra_session(face, login, method="oidc" if face.name == "backoffice" else "email_link")
    earlier = _now() - dt.timedelta(minutes=get_settings().reauth_minutes + 1)
    await Session.update({Session.authenticated_at: earlier}).where(Session.token_hash == token_hash(token))
    async with face_client(face.name) as client:
        use_cookies(client, {face.cookie: token})
        form = await client.get("/account/password")
        assert form.status_code == 200  # reading is fine
        before = await last_seq()
        response = await post_form(client, "/account/password", {"password": NEW_PASSWORD}, csrf_from(form.text))
        assert response.status_code == 403, (response.status_code, response.headers.get("location"))
        assert "needs a sign-in from the last" in response.text
    assert await _security_events_since(before) == []
    assert await _password_hash(face, login) == ""


@pytest.mark.parametrize("face", FACES)
async def test_password_sign_in_to_an_account_without_password_fails_like_a_wrong_password(
        face: Face, db: None) -> None:
    await _accounts()
    await _set_password_hash(face, face.login, "")
    unknown = "nobody-here" if face.name == "backoffice" else "nobody@example.org"
    async with face_client(face.name) as client:
        csrf = await csrf_token(client)
        before = await last_seq()
        empty = await sign_in_attempt(client, face.login, "some password or other", csrf)
        nobody = await sign_in_attempt(client, unknown, "some password or other", csrf)
        assert empty.status_code == nobody.status_code == 400
        assert _alert(empty.text) == GENERIC_FAILURE
        assert empty.text == nobody.text
        assert not has_cookie(empty, face.cookie)
        assert summary(await _security_events_since(before)) == [("signin", "session", "failed")] * 2
    assert await Session.count() == 0


@pytest.mark.parametrize("face", FACES)
async def test_the_timing_dummy_password_does_not_open_an_account_without_password(face: Face, db: None) -> None:
    """passwords.verify_password checks an empty stored hash against the module's dummy hash (to
    equalise timing) and then refuses only `None`, not "": the dummy's password verifies for every
    account without a password (SSO-only staff, customers who use emailed links or passkeys). Today
    needs_rehash("") then raises InvalidHashError, so the answer is a 500 instead of a session: it
    tells which accounts have no password, records no failure for the rate limit, and is one guard
    (`if stored and needs_rehash(...)`) away from signing the caller in."""
    await _accounts()
    await _set_password_hash(face, face.login, "")
    async with face_client(face.name) as client:
        response = await sign_in_attempt(client, face.login, "mutual-timing-equaliser")
        assert response.status_code == 400, (response.status_code, response.headers.get("location"))
        assert _alert(response.text) == GENERIC_FAILURE
        assert not has_cookie(response, face.cookie)
    assert await Session.count() == 0


# --- sign-in hygiene ------------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
async def test_a_sign_in_never_keeps_a_session_cookie_the_browser_already_had(face: Face, db: None) -> None:
    await _accounts()
    planted = "attacker-chosen-session-value"
    async with face_client(face.name) as client:
        csrf = await csrf_token(client)
        client.cookies.set(face.cookie, planted, domain=HOST)
        response = await sign_in_attempt(client, face.login, face.password, csrf)
        assert response.status_code == 303
        tokens = [cookie_value(response, face.cookie)]
        if face.name == "backoffice":
            assert response.headers["location"] == "/signin/mfa"
            done = await post_form(client, "/signin/mfa", {"code": await totp_code(face.login)}, csrf)
            assert done.status_code == 303
            tokens.append(cookie_value(done, face.cookie))
        assert planted not in tokens and len(set(tokens)) == len(tokens)
        assert client.cookies[face.cookie] == tokens[-1]
        assert (await client.get(face.home)).status_code == 200
    assert not await _session_exists(planted)
    assert not await _is_signed_in(face, planted)
    for waiting in tokens[:-1]:
        assert not await _session_exists(waiting), "the waiting sign-in's token is gone once signed in"


@pytest.mark.parametrize("face", FACES)
async def test_a_sign_in_over_a_live_session_gets_a_new_token(face: Face, db: None) -> None:
    await _accounts()
    async with face_client(face.name) as client:
        csrf = await signed_in(client, face.login, face.password)
        first = client.cookies[face.cookie]
        response = await sign_in_attempt(client, face.login, face.password, csrf)
        assert response.status_code == 303
        assert cookie_value(response, face.cookie) != first


@pytest.mark.parametrize("face", FACES)
async def test_a_weaker_password_hash_is_upgraded_at_the_next_sign_in(face: Face, db: None) -> None:
    await _accounts()
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(face.password)
    assert needs_rehash(weak)
    await _set_password_hash(face, face.login, weak)
    async with face_client(face.name) as client:
        wrong = await sign_in_attempt(client, face.login, "not-the-password")
        assert wrong.status_code == 400
        assert await _password_hash(face, face.login) == weak, "a failed sign-in changes nothing"
        await signed_in(client, face.login, face.password)
        assert (await client.get(face.home)).status_code == 200
    upgraded = await _password_hash(face, face.login)
    assert upgraded != weak
    assert not needs_rehash(upgraded)
    assert argon2.PasswordHasher().verify(upgraded, face.password)
