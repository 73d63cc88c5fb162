"""Changes to how one signs in need a recent sign-in (ASVS 7.5.1): an old session may browse, not change."""

from __future__ import annotations

import datetime as dt

import pytest

from server.identity.service import (
    complete_signin,
    open_session,
    pending_signin,
    resume_session,
    staff_actor,
    token_hash,
)
from server.identity.tables import Session, StaffAccount
from server.settings import get_settings
from server.web.auth import SESSION_COOKIES
from tests.faces._client import (
    STAFF_PASSWORD,
    cookie_value,
    customer_session,
    events_since,
    face_client,
    last_seq,
    make_customer,
    make_staff,
    post_form,
    staff_session,
    use_cookies,
)
from tests.support import ERIKA, csrf_from

CHANGES = [
    ("backoffice", "/account/two-step/recovery-codes"),
    ("backoffice", "/account/password"),  # the current password is one of the two factors staff need
    ("backoffice", "/account/sessions/revoke-others"),
    ("portal", "/account/sessions/revoke-others"),
    ("portal", "/account/passkeys/options"),
    ("backoffice", "/account/passkeys/options"),
    ("portal", "/account/passkeys/00000000-0000-4000-8000-000000000000/delete"),
]


async def _age(token: str, minutes: int) -> None:
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    await Session.update({Session.authenticated_at: earlier}).where(Session.token_hash == token_hash(token))


@pytest.mark.parametrize(("face", "path"), CHANGES)
async def test_an_old_sign_in_must_sign_in_again_before_changing_how_it_signs_in(face: str, path: str,
                                                                                 db: None) -> None:
    if face == "backoffice":
        await make_staff("admin", "admin")
        token = await staff_session("admin")
    else:
        customer = await make_customer(ERIKA)
        token = await customer_session(customer.email)
    await _age(token, get_settings().reauth_minutes + 1)
    async with face_client(face) as client:
        use_cookies(client, {SESSION_COOKIES[face]: token})
        page = await client.get("/account")
        assert page.status_code == 200  # reading is fine
        csrf = csrf_from(page.text)
        before = await last_seq()
        response = await post_form(client, path, {}, csrf)
    assert response.status_code == 403
    assert "needs a sign-in from the last" in response.text and "sign in again" in response.text
    assert await events_since(before) == []


async def test_a_fresh_sign_in_may_change_how_it_signs_in(db: None) -> None:
    await make_staff("admin", "admin")
    token = await staff_session("admin")
    await _age(token, get_settings().reauth_minutes - 1)
    async with face_client("backoffice") as client:
        use_cookies(client, {SESSION_COOKIES["backoffice"]: token})
        csrf = csrf_from((await client.get("/account")).text)
        response = await post_form(client, "/account/two-step/recovery-codes", {}, csrf)
    assert response.status_code == 200 and response.text.count("<li><code>") == 10


async def test_proving_the_current_password_counts_as_a_fresh_sign_in(db: None) -> None:
    """A customer's current password is the whole sign-in: after a password change an old session may
    end the others at once (ASVS 7.4.3, 7.5.2)."""
    customer = await make_customer(ERIKA)
    token = await customer_session(customer.email)
    await customer_session(customer.email)  # another browser
    await _age(token, get_settings().reauth_minutes + 5)
    async with face_client("portal") as client:
        use_cookies(client, {SESSION_COOKIES["portal"]: token})
        csrf = csrf_from((await client.get("/account")).text)
        changed = await post_form(client, "/account/password", {"current": customer.password,
                                                                "password": "a brand new pass phrase"}, csrf)
        assert changed.status_code == 303 and changed.headers["location"] == "/account/sessions?changed=password"
        ended = await post_form(client, "/account/sessions/revoke-others", {}, csrf)
    assert ended.status_code == 303
    assert await Session.count() == 1


async def test_a_code_after_an_old_sign_in_at_the_provider_is_no_recent_sign_in(db: None) -> None:
    """The sign-in counts from its older factor: a fresh code does not make an old SSO sign-in recent."""
    await make_staff("sso-user", "sales")
    account = (await StaffAccount.select().where(StaffAccount.username == "sso-user"))[0]
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    waiting = await open_session("backoffice", account["id"], staff_actor(account, "r"), method="oidc",
                                 stage="mfa", authenticated_at=old)
    pending = await pending_signin(waiting.token)
    assert pending is not None
    done = await complete_signin(pending, "totp", "r")
    actor = await resume_session("backoffice", done.token, "r")
    assert actor is not None and actor.signed_in_at == old


async def test_a_staff_password_change_does_not_renew_the_sign_in(db: None) -> None:
    """The current password is one of two staff factors: changing it keeps the sign-in's time, so a
    session cannot stay recent for ever by changing the password every few minutes."""
    await make_staff("admin", "admin")
    token = await staff_session("admin")
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=get_settings().reauth_minutes - 1)
    await Session.update({Session.authenticated_at: earlier}).where(Session.token_hash == token_hash(token))
    async with face_client("backoffice") as client:
        use_cookies(client, {SESSION_COOKIES["backoffice"]: token})
        csrf = csrf_from((await client.get("/account/password")).text)
        changed = await post_form(client, "/account/password", {"current": STAFF_PASSWORD,
                                                                "password": "a brand new pass phrase"}, csrf)
        assert changed.status_code == 303
        new_token = cookie_value(changed, SESSION_COOKIES["backoffice"])
    rows = await Session.select(Session.authenticated_at).where(Session.token_hash == token_hash(new_token))
    assert [r["authenticated_at"] for r in rows] == [earlier]
