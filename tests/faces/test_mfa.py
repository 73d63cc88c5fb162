"""Staff second factor over HTTP: enrolment at first sign-in, the code step, replay, recovery codes,
rate limiting, expiry of a waiting sign-in, the optional mode and an administrator's reset."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import time
import uuid
from collections.abc import Iterator

import httpx
import pyotp
import pytest

from server.identity import totp
from server.identity.service import staff_actor, token_hash
from server.identity.tables import RecoveryCode, Session, StaffAccount
from server.settings import get_settings
from server.web.auth import SESSION_COOKIES
from tests.faces._client import (
    STAFF_PASSWORD,
    TOTP_SECRETS,
    Client,
    Event,
    cookie_value,
    csrf_token,
    customer_session,
    events_since,
    face_client,
    has_cookie,
    last_seq,
    make_customer,
    make_staff,
    post_form,
    sign_in_attempt,
    signed_in,
    summary,
    totp_code,
    use_cookies,
)
from tests.support import ERIKA

STAFF_COOKIE = SESSION_COOKIES["backoffice"]
ALERT_RE = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.DOTALL)
SECRET_RE = re.compile(r'<code id="totp-secret">([^<]*)</code>')
ENROLMENT_RE = re.compile(r'name="enrolment" value="([^"]+)"')
CODES_BLOCK_RE = re.compile(r'<ul class="recovery-codes" id="recovery-codes">(.*?)</ul>', re.DOTALL)
CODE_RE = re.compile(r"<code>([^<]+)</code>")
RECOVERY_FORMAT = re.compile(r"^[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}$")
WRONG_CODE = ("That code is not right, or was used already. Enter the current code from your app, "
              "or a recovery code.")
START_OVER = "/signin?expired=1"


# --- helpers --------------------------------------------------------------------------------------


def _alert(html: str) -> str:
    match = ALERT_RE.search(html)
    assert match, "the page shows no error message"
    return " ".join(match.group(1).split())


async def _security_events_since(seq: int) -> list[Event]:
    """Account-security events only (the pages visited on the way audit their own reads)."""
    return [e for e in await events_since(seq) if e.entity == "session"]


def _step() -> int:
    return int(time.time() // totp.STEP)


def _code(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).at(step * totp.STEP)


def _wrong_code(secret: str) -> str:
    """A 6-digit code that is not the code of any step near now."""
    now = _step()
    valid = {_code(secret, s) for s in range(now - 3, now + 4)}
    return next(c for c in (f"{i:06d}" for i in range(100)) if c not in valid)


def _enrolment_of(html: str) -> tuple[str, str]:
    """(the base32 secret shown as text, the sealed enrolment of the form) of an enrolment page."""
    secret, sealed = SECRET_RE.search(html), ENROLMENT_RE.search(html)
    assert secret and sealed, "the page is not an enrolment page"
    return secret.group(1), sealed.group(1)


def _recovery_codes(html: str) -> list[str]:
    block = CODES_BLOCK_RE.search(html)
    assert block, "the page shows no recovery codes"
    return CODE_RE.findall(block.group(1))


async def _password_step(client: Client, username: str, password: str = STAFF_PASSWORD
                         ) -> tuple[httpx.Response, str]:
    csrf = await csrf_token(client)
    return await sign_in_attempt(client, username, password, csrf), csrf


async def _account(username: str) -> dict:
    rows = await StaffAccount.select().where(StaffAccount.username == username)
    assert rows, username
    return rows[0]


async def _full_sessions(account_id: uuid.UUID) -> int:
    return await Session.count().where((Session.account_id == account_id) & (Session.stage == "full"))


async def _signed_in_as_staff(client: Client) -> bool:
    """Whether the client's cookie opens a staff page (a refusal must be the way to sign-in)."""
    response = await client.get("/people")
    if response.status_code == 303:
        assert response.headers["location"] == "/signin"
        return False
    assert response.status_code == 200, response.status_code
    return True


async def _enrol_through_the_form(client: Client, username: str) -> tuple[str, int, list[str], str]:
    """Password, then enrolment at the first sign-in. Returns (secret, step used, recovery codes,
    csrf token)."""
    response, csrf = await _password_step(client, username)
    assert response.status_code == 303 and response.headers["location"] == "/signin/enrol"
    page = await client.get("/signin/enrol")
    assert page.status_code == 200
    secret, sealed = _enrolment_of(page.text)
    step = _step()
    done = await post_form(client, "/signin/enrol", {"enrolment": sealed, "code": _code(secret, step)}, csrf)
    assert done.status_code == 200, done.text
    return secret, step, _recovery_codes(done.text), csrf


async def _new_recovery_codes(username: str) -> list[str]:
    """Fresh recovery codes for an account, as the account page would make them."""
    return await totp.regenerate_recovery_codes(staff_actor(await _account(username), uuid.uuid4().hex))


@pytest.fixture
def mfa_optional() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MUTUAL_STAFF_MFA", "optional")
        get_settings.cache_clear()
        assert get_settings().staff_mfa == "optional"
        yield
    get_settings.cache_clear()


# --- enrolment at the first sign-in ---------------------------------------------------------------


async def test_staff_mfa_is_required_by_default() -> None:
    assert get_settings().staff_mfa == "required"


async def test_staff_without_authenticator_must_enrol_and_the_waiting_cookie_opens_nothing(db: None) -> None:
    await make_staff("newbie", "admin", mfa=False)
    async with face_client("backoffice") as client:
        before = await last_seq()
        response, csrf = await _password_step(client, "newbie")
        assert response.status_code == 303 and response.headers["location"] == "/signin/enrol"
        assert has_cookie(response, STAFF_COOKIE)
        for page in ("/people", "/", "/account", "/account/sessions", "/account/two-step", "/audit"):
            refused = await client.get(page)
            assert refused.status_code == 303 and refused.headers["location"] == "/signin", page
        # the waiting sign-in is one for enrolment, not for a code
        wrong_stage = await client.get("/signin/mfa")
        assert wrong_stage.status_code == 303 and wrong_stage.headers["location"] == START_OVER
        changed = await post_form(client, "/account/password",
                                  {"current": STAFF_PASSWORD, "password": "a new and long password"}, csrf)
        assert changed.status_code == 303 and changed.headers["location"] == "/signin"
    assert ("signin", "session", "ok") not in summary(await _security_events_since(before))
    assert await _full_sessions((await _account("newbie"))["id"]) == 0


async def test_enrolment_shows_a_qr_code_and_the_key_and_a_wrong_code_stores_nothing(db: None) -> None:
    await make_staff("newbie", "admin", mfa=False)
    account = await _account("newbie")
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "newbie")
        pending = client.cookies[STAFF_COOKIE]
        page = await client.get("/signin/enrol")
        assert page.status_code == 200
        assert re.search(r'<figure class="qr"[^>]*>\s*<svg', page.text), "no inline SVG QR code"
        secret, sealed = _enrolment_of(page.text)
        assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
        pyotp.TOTP(secret).now()  # a valid base32 seed
        assert page.headers.get("cache-control") == "no-store", "the seed must not be cached"
        assert page.text.count("<h1") == 1

        before = await last_seq()
        wrong = await post_form(client, "/signin/enrol", {"enrolment": sealed, "code": _wrong_code(secret)}, csrf)
        assert wrong.status_code == 400
        assert _alert(wrong.text) == "That code is not right. Scan the new code below and try again."
        assert not has_cookie(wrong, STAFF_COOKIE)
        new_secret, _ = _enrolment_of(wrong.text)
        assert new_secret != secret, "a failed enrolment shows a new key"
        stored = await _account("newbie")
        assert stored["totp_secret"] is None and stored["totp_last_step"] is None
        assert await RecoveryCode.count().where(RecoveryCode.account_id == account["id"]) == 0
        assert summary(await _security_events_since(before)) == [("signin_mfa", "session", "failed")]
        # still waiting: the same cookie, no access
        assert client.cookies[STAFF_COOKIE] == pending
        assert not await _signed_in_as_staff(client)

        # a sealed enrolment that was tampered with is refused too
        tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
        refused = await post_form(client, "/signin/enrol", {"enrolment": tampered,
                                                             "code": _code(secret, _step())}, csrf)
        assert refused.status_code == 400
        assert (await _account("newbie"))["totp_secret"] is None


async def test_the_right_code_completes_enrolment_and_sign_in_with_new_token_and_ten_recovery_codes(
        db: None) -> None:
    await make_staff("newbie", "admin", mfa=False)
    account = await _account("newbie")
    async with face_client("backoffice") as client:
        response, csrf = await _password_step(client, "newbie")
        pending = cookie_value(response, STAFF_COOKIE)
        secret, sealed = _enrolment_of((await client.get("/signin/enrol")).text)
        before = await last_seq()
        done = await post_form(client, "/signin/enrol", {"enrolment": sealed, "code": _code(secret, _step())}, csrf)
        assert done.status_code == 200
        codes = _recovery_codes(done.text)
        assert len(codes) == 10 and len(set(codes)) == 10
        assert all(RECOVERY_FORMAT.match(c) for c in codes), codes
        token = cookie_value(done, STAFF_COOKIE)
        assert token and token != pending
        assert 'href="/"' in done.text
        assert done.headers.get("cache-control") == "no-store", "recovery codes must not be cached"

        home = await client.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/people"
        assert await _signed_in_as_staff(client)
        two_step = await client.get("/account/two-step")
        assert two_step.status_code == 200 and "<strong>10</strong> unused recovery codes" in two_step.text

        events = await _security_events_since(before)
        assert summary(events) == [("mfa_enrol", "session", "ok"), ("signin", "session", "ok")]
        assert events[0].fields == {"factor": "totp"} and events[0].actor_kind == "staff"
        assert events[1].fields == {"method": "password+totp"}
        for event in events:
            assert secret not in str(event.fields) and not any(c in str(event.fields) for c in codes)

        # the waiting session is gone: its token opens nothing, not even the enrolment page again
        use_cookies(client, {STAFF_COOKIE: pending})
        again = await client.get("/signin/enrol")
        assert again.status_code == 303 and again.headers["location"] == START_OVER
        assert not await _signed_in_as_staff(client)
    assert await Session.count().where(Session.account_id == account["id"]) == 1
    assert await _full_sessions(account["id"]) == 1
    stored = await _account("newbie")
    assert stored["totp_secret"] and stored["totp_last_step"] is not None
    assert await totp.recovery_codes_left(account["id"]) == 10


async def test_an_enrolment_sealed_for_another_account_is_refused(db: None) -> None:
    await make_staff("first", "admin", mfa=False)
    await make_staff("second", "admin", mfa=False)
    async with face_client("backoffice") as first:
        await _password_step(first, "first")
        secret, sealed = _enrolment_of((await first.get("/signin/enrol")).text)
    async with face_client("backoffice") as second:
        _, csrf = await _password_step(second, "second")
        refused = await post_form(second, "/signin/enrol", {"enrolment": sealed, "code": _code(secret, _step())},
                                  csrf)
        assert refused.status_code == 400
        assert not await _signed_in_as_staff(second)
    assert (await _account("second"))["totp_secret"] is None
    assert (await _account("first"))["totp_secret"] is None


# --- the code step --------------------------------------------------------------------------------


async def test_after_enrolment_the_next_sign_in_asks_for_a_code(db: None) -> None:
    await make_staff("newbie", "admin", mfa=False)
    async with face_client("backoffice") as client:
        secret, step, _, _ = await _enrol_through_the_form(client, "newbie")
    async with face_client("backoffice") as client:
        response, csrf = await _password_step(client, "newbie")
        assert response.status_code == 303 and response.headers["location"] == "/signin/mfa"
        pending = cookie_value(response, STAFF_COOKIE)
        assert not await _signed_in_as_staff(client)
        form = await client.get("/signin/mfa")
        assert form.status_code == 200 and 'name="code"' in form.text
        before = await last_seq()
        done = await post_form(client, "/signin/mfa", {"code": _code(secret, step + 1)}, csrf)
        assert done.status_code == 303 and done.headers["location"] == "/"
        token = cookie_value(done, STAFF_COOKIE)
        assert token != pending
        assert await _signed_in_as_staff(client)
        events = await _security_events_since(before)
        assert summary(events) == [("signin", "session", "ok")]
        assert events[0].fields == {"method": "password+totp"}


async def test_a_code_is_accepted_once_a_replay_in_the_same_step_is_refused(db: None) -> None:
    await make_staff("alice", "admin")
    async with face_client("backoffice") as first:
        _, csrf = await _password_step(first, "alice")
        code = await totp_code("alice")
        assert (await post_form(first, "/signin/mfa", {"code": code}, csrf)).status_code == 303
    async with face_client("backoffice") as second:
        response, csrf = await _password_step(second, "alice")
        assert response.headers["location"] == "/signin/mfa"
        before = await last_seq()
        replay = await post_form(second, "/signin/mfa", {"code": code}, csrf)
        assert replay.status_code == 400
        assert _alert(replay.text) == WRONG_CODE
        assert not has_cookie(replay, STAFF_COOKIE)
        assert not await _signed_in_as_staff(second)
        assert summary(await _security_events_since(before)) == [("signin_mfa", "session", "failed")]
        # the next code still works from the same waiting sign-in
        done = await post_form(second, "/signin/mfa", {"code": await totp_code("alice")}, csrf)
        assert done.status_code == 303 and done.headers["location"] == "/"
        assert await _signed_in_as_staff(second)


async def test_an_older_code_than_the_last_accepted_one_is_refused(db: None) -> None:
    await make_staff("alice", "admin")
    secret = TOTP_SECRETS["alice"]
    account = await _account("alice")
    now = _step()
    await StaffAccount.update({StaffAccount.totp_last_step: now + 1}).where(StaffAccount.id == account["id"])
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "alice")
        for step in (now - 1, now, now + 1):
            refused = await post_form(client, "/signin/mfa", {"code": _code(secret, step)}, csrf)
            assert refused.status_code == 400, step
        assert not await _signed_in_as_staff(client)


async def test_a_code_is_accepted_with_spaces_as_apps_show_it(db: None) -> None:
    await make_staff("alice", "admin")
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "alice")
        code = await totp_code("alice")
        done = await post_form(client, "/signin/mfa", {"code": f" {code[:3]} {code[3:]} "}, csrf)
        assert done.status_code == 303 and done.headers["location"] == "/"


async def test_a_recovery_code_signs_in_once(db: None) -> None:
    await make_staff("alice", "admin")
    account = await _account("alice")
    codes = await _new_recovery_codes("alice")
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "alice")
        before = await last_seq()
        done = await post_form(client, "/signin/mfa", {"code": codes[0]}, csrf)
        assert done.status_code == 303 and done.headers["location"] == "/"
        assert await _signed_in_as_staff(client)
        events = await _security_events_since(before)
        assert summary(events) == [("signin", "session", "ok")]
        assert events[0].fields == {"method": "password+recovery_code"}
        assert codes[0] not in str(events[0].fields)
    assert await totp.recovery_codes_left(account["id"]) == 9
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "alice")
        again = await post_form(client, "/signin/mfa", {"code": codes[0]}, csrf)
        assert again.status_code == 400 and _alert(again.text) == WRONG_CODE
        assert not await _signed_in_as_staff(client)
        # written differently (capitals, no dashes), another unused code still works
        other = codes[1].replace("-", "").upper()
        done = await post_form(client, "/signin/mfa", {"code": other}, csrf)
        assert done.status_code == 303
    assert await totp.recovery_codes_left(account["id"]) == 8


async def test_one_recovery_code_sent_by_several_requests_at_once_lets_one_in(db: None) -> None:
    await make_staff("alice", "admin")
    account = await _account("alice")
    codes = await _new_recovery_codes("alice")
    results = await asyncio.gather(*(totp.check_code(account, codes[0]) for _ in range(4)))
    assert sorted(results, key=str) == [None, None, None, "recovery_code"]
    assert await totp.recovery_codes_left(account["id"]) == 9
    # What cannot be a code (a character outside the code alphabet) is refused without hashing.
    assert await totp.check_code(account, "0000-0000-0000") is None


async def test_a_recovery_code_of_another_account_is_refused(db: None) -> None:
    await make_staff("alice", "admin")
    await make_staff("bob", "admin")
    bobs = await _new_recovery_codes("bob")
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "alice")
        refused = await post_form(client, "/signin/mfa", {"code": bobs[0]}, csrf)
        assert refused.status_code == 400
        assert not await _signed_in_as_staff(client)
    assert await totp.recovery_codes_left((await _account("bob"))["id"]) == 10


async def test_running_low_on_recovery_codes_leads_to_the_two_step_page(db: None) -> None:
    await make_staff("alice", "admin")
    codes = await _new_recovery_codes("alice")
    for used, code in enumerate(codes[:7], start=1):
        async with face_client("backoffice") as client:
            _, csrf = await _password_step(client, "alice")
            done = await post_form(client, "/signin/mfa", {"code": code}, csrf)
            assert done.status_code == 303
            left = 10 - used
            expected = "/account/two-step?low=1" if left <= 3 else "/"
            assert done.headers["location"] == expected, f"{left} codes left"
            if left <= 3:
                page = await client.get(done.headers["location"])
                assert page.status_code == 200
                assert "You are running out of recovery codes: make new ones." in page.text
                assert "<strong>3</strong> unused recovery codes" in page.text


async def test_after_too_many_wrong_codes_even_the_right_code_is_refused_with_429(db: None) -> None:
    await make_staff("alice", "admin")
    secret = TOTP_SECRETS["alice"]
    limit = get_settings().signin_max_failures
    minutes = get_settings().signin_window_minutes
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "alice")
        before = await last_seq()
        for attempt in range(limit):
            wrong = await post_form(client, "/signin/mfa", {"code": _wrong_code(secret)}, csrf)
            assert wrong.status_code == 400, f"attempt {attempt + 1} of {limit}"
        # Each wrong code is recorded, and the lock once, when it starts.
        assert summary(await _security_events_since(before)) == [("signin_mfa", "session", "failed")] * (
            limit - 1) + [("mfa_locked", "session", "denied"), ("signin_mfa", "session", "failed")]
        right = await totp_code("alice")
        refused = await post_form(client, "/signin/mfa", {"code": right}, csrf)
        assert refused.status_code == 429
        assert _alert(refused.text) == f"Too many wrong codes. Wait {minutes} minutes, then try again."
        assert not has_cookie(refused, STAFF_COOKIE)
        assert not await _signed_in_as_staff(client)
    # starting again with the password does not lift the lock of the second step
    async with face_client("backoffice") as client:
        response, csrf = await _password_step(client, "alice")
        assert response.headers["location"] == "/signin/mfa"
        again = await post_form(client, "/signin/mfa", {"code": right}, csrf)
        assert again.status_code == 429
        assert not await _signed_in_as_staff(client)
    assert await _full_sessions((await _account("alice"))["id"]) == 0


async def test_the_enrolment_step_is_rate_limited_too(db: None) -> None:
    await make_staff("newbie", "admin", mfa=False)
    limit = get_settings().signin_max_failures
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "newbie")
        secret, sealed = _enrolment_of((await client.get("/signin/enrol")).text)
        for _ in range(limit):
            wrong = await post_form(client, "/signin/enrol", {"enrolment": sealed, "code": _wrong_code(secret)},
                                    csrf)
            assert wrong.status_code == 400
        refused = await post_form(client, "/signin/enrol", {"enrolment": sealed, "code": _code(secret, _step())},
                                  csrf)
        assert refused.status_code == 429
        assert "Wait" in _alert(refused.text)
        assert not await _signed_in_as_staff(client)
    assert (await _account("newbie"))["totp_secret"] is None


# --- the waiting sign-in --------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["mfa", "enrol"])
async def test_a_waiting_sign_in_lives_for_pending_signin_minutes_then_starts_over(stage: str, db: None) -> None:
    await make_staff("alice", "admin", mfa=stage == "mfa")
    account = await _account("alice")
    async with face_client("backoffice") as client:
        response, csrf = await _password_step(client, "alice")
        assert response.headers["location"] == f"/signin/{stage}"
        pending = client.cookies[STAFF_COOKIE]
        rows = await Session.select().where(Session.token_hash == token_hash(pending))
        assert rows and rows[0]["stage"] == stage
        life = rows[0]["expires_at"] - rows[0]["created_at"]
        assert abs(life - dt.timedelta(minutes=get_settings().pending_signin_minutes)) < dt.timedelta(seconds=2)

        await Session.update({Session.expires_at: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)}
                             ).where(Session.token_hash == token_hash(pending))
        form = await client.get(f"/signin/{stage}")
        assert form.status_code == 303 and form.headers["location"] == START_OVER
        if stage == "mfa":
            data = {"code": await totp_code("alice")}
        else:
            data = {"code": "123456", "enrolment": "x"}
        posted = await post_form(client, f"/signin/{stage}", data, csrf)
        assert posted.status_code == 303 and posted.headers["location"] == START_OVER
        assert not has_cookie(posted, STAFF_COOKIE)
        assert not await _signed_in_as_staff(client)
        page = await client.get(START_OVER)
        assert page.status_code == 200
        assert _alert(page.text) == "Your sign-in took too long. Sign in again."
    assert await _full_sessions(account["id"]) == 0


async def test_a_portal_session_cannot_stand_in_for_a_waiting_backoffice_sign_in(db: None) -> None:
    await make_staff("alice", "admin")
    account = await _account("alice")
    await make_customer(ERIKA)
    portal_token = await customer_session(ERIKA["email"])
    # and a portal-face row that waits for a second factor, for the staff account's very id
    crafted = secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    await Session.insert(Session(token_hash=token_hash(crafted), face="portal", account_id=account["id"],
                                 created_at=now, last_seen_at=now, expires_at=now + dt.timedelta(minutes=5),
                                 handle=uuid.uuid4(), stage="mfa", method="password", device=""))
    async with face_client("backoffice") as client:
        csrf = await csrf_token(client)
        code = _code(TOTP_SECRETS["alice"], _step() + 1)  # a right code, never consumed here
        for token in (portal_token, crafted):
            for name in SESSION_COOKIES.values():
                use_cookies(client, {name: token})
                for stage in ("mfa", "enrol"):
                    form = await client.get(f"/signin/{stage}")
                    assert form.status_code == 303 and form.headers["location"] == START_OVER, (name, stage)
                posted = await post_form(client, "/signin/mfa", {"code": code}, csrf)
                assert posted.status_code == 303 and posted.headers["location"] == START_OVER
                assert not has_cookie(posted, STAFF_COOKIE)
                assert not await _signed_in_as_staff(client)
    assert await _full_sessions(account["id"]) == 0


async def test_a_waiting_backoffice_sign_in_is_no_session_on_the_portal(db: None) -> None:
    await make_staff("alice", "admin")
    async with face_client("backoffice") as staff_client:
        await _password_step(staff_client, "alice")
        pending = staff_client.cookies[STAFF_COOKIE]
    async with face_client("portal") as client:
        for name in SESSION_COOKIES.values():
            use_cookies(client, {name: pending})
            response = await client.get("/profile")
            assert response.status_code == 303 and response.headers["location"] == "/signin", name


# --- optional mode, the account page, recovery codes, storage, reset --------------------------------


async def test_with_optional_mfa_an_account_without_authenticator_signs_straight_in(
        db: None, mfa_optional: None) -> None:
    await make_staff("casual", "admin", mfa=False)
    await make_staff("careful", "admin")
    async with face_client("backoffice") as client:
        before = await last_seq()
        response, _ = await _password_step(client, "casual")
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert await _signed_in_as_staff(client)
        events = await _security_events_since(before)
        assert summary(events) == [("signin", "session", "ok")]
        assert events[0].fields == {"method": "password"}
    async with face_client("backoffice") as client:
        response, _ = await _password_step(client, "careful")
        assert response.headers["location"] == "/signin/mfa", "an enrolled authenticator is always asked for"
        assert not await _signed_in_as_staff(client)


async def test_with_optional_mfa_the_account_page_enrols_and_rotates_the_session(
        db: None, mfa_optional: None) -> None:
    await make_staff("casual", "admin", mfa=False)
    async with face_client("backoffice") as client:
        csrf = await signed_in(client, "casual", STAFF_PASSWORD)
        old = client.cookies[STAFF_COOKIE]
        # no authenticator: new recovery codes make no sense yet
        none_yet = await post_form(client, "/account/two-step/recovery-codes", {}, csrf)
        assert none_yet.status_code == 303 and none_yet.headers["location"] == "/account/two-step"
        page = await client.get("/account/two-step")
        assert page.status_code == 200
        secret, sealed = _enrolment_of(page.text)
        assert 'action="/account/two-step"' in page.text
        wrong = await post_form(client, "/account/two-step", {"enrolment": sealed, "code": _wrong_code(secret)},
                                csrf)
        assert wrong.status_code == 400
        assert (await _account("casual"))["totp_secret"] is None
        before = await last_seq()
        step = _step()
        done = await post_form(client, "/account/two-step", {"enrolment": sealed, "code": _code(secret, step)},
                               csrf)
        assert done.status_code == 200
        assert len(_recovery_codes(done.text)) == 10
        new = cookie_value(done, STAFF_COOKIE)
        assert new and new != old
        assert summary(await _security_events_since(before)) == [("mfa_enrol", "session", "ok")]
        assert await _signed_in_as_staff(client)
        shown = await client.get("/account/two-step")
        assert "<strong>10</strong> unused recovery codes" in shown.text
        # enrolled already: the enrol form just leads back
        again = await post_form(client, "/account/two-step", {"enrolment": sealed, "code": _code(secret, step)},
                                csrf)
        assert again.status_code == 303 and again.headers["location"] == "/account/two-step"
    async with face_client("backoffice") as replay:
        use_cookies(replay, {STAFF_COOKIE: old})
        assert not await _signed_in_as_staff(replay)
    async with face_client("backoffice") as client:
        response, csrf = await _password_step(client, "casual")
        assert response.headers["location"] == "/signin/mfa"
        done = await post_form(client, "/signin/mfa", {"code": _code(secret, step + 1)}, csrf)
        assert done.status_code == 303


async def test_new_recovery_codes_replace_the_old_ones(db: None) -> None:
    await make_staff("alice", "admin")
    account = await _account("alice")
    async with face_client("backoffice") as client:
        csrf = await signed_in(client, "alice", STAFF_PASSWORD)
        before = await last_seq()
        first = await post_form(client, "/account/two-step/recovery-codes", {}, csrf)
        assert first.status_code == 200
        old_codes = _recovery_codes(first.text)
        second = await post_form(client, "/account/two-step/recovery-codes", {}, csrf)
        new_codes = _recovery_codes(second.text)
        assert len(old_codes) == len(new_codes) == 10 and not set(old_codes) & set(new_codes)
        assert summary(await _security_events_since(before)) == [("recovery_codes_regenerate", "session", "ok")] * 2
        page = await client.get("/account/two-step")
        assert "<strong>10</strong> unused recovery codes" in page.text
    assert await RecoveryCode.count().where(RecoveryCode.account_id == account["id"]) == 10
    async with face_client("backoffice") as client:
        _, csrf = await _password_step(client, "alice")
        for code in old_codes[:3]:
            refused = await post_form(client, "/signin/mfa", {"code": code}, csrf)
            assert refused.status_code == 400
        done = await post_form(client, "/signin/mfa", {"code": new_codes[0]}, csrf)
        assert done.status_code == 303


async def test_the_totp_secret_and_recovery_codes_are_not_stored_in_clear(db: None) -> None:
    await make_staff("alice", "admin")
    secret = TOTP_SECRETS["alice"]
    codes = await _new_recovery_codes("alice")
    account = await _account("alice")
    stored = account["totp_secret"]
    assert stored and secret not in stored and secret.lower() not in stored
    assert secret not in str(account)
    hashes = [r["code_hash"] for r in await RecoveryCode.select().where(RecoveryCode.account_id == account["id"])]
    assert len(hashes) == 10
    for code in codes:
        for form in (code, code.replace("-", "")):
            assert all(form not in h for h in hashes)


async def test_an_administrators_reset_sends_the_next_sign_in_to_enrolment(db: None) -> None:
    await make_staff("alice", "admin")
    account = await _account("alice")
    assert await totp.reset_totp("ALICE")
    stored = await _account("alice")
    assert stored["totp_secret"] is None and stored["totp_last_step"] is None
    assert await RecoveryCode.count().where(RecoveryCode.account_id == account["id"]) == 0
    assert not await totp.reset_totp("nobody-here")
    async with face_client("backoffice") as client:
        response, csrf = await _password_step(client, "alice")
        assert response.status_code == 303 and response.headers["location"] == "/signin/enrol"
        # the old authenticator no longer counts
        old = await post_form(client, "/signin/mfa", {"code": await totp_code("alice")}, csrf)
        assert old.status_code == 303 and old.headers["location"] == START_OVER
        assert not await _signed_in_as_staff(client)
        page = await client.get("/signin/enrol")
        secret, sealed = _enrolment_of(page.text)
        assert secret != TOTP_SECRETS["alice"]
        done = await post_form(client, "/signin/enrol", {"enrolment": sealed, "code": _code(secret, _step())},
                               csrf)
        assert done.status_code == 200 and len(_recovery_codes(done.text)) == 10
        assert await _signed_in_as_staff(client)
