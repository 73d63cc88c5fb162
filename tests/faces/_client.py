"""Helpers for driving the portal and backoffice apps over HTTP in face tests."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pyotp
from litestar import Litestar

from backoffice.app import create_app as create_backoffice
from portal.app import create_app as create_portal
from server import gateway
from server.actor import system_actor
from server.audit.tables import AuditEvent
from server.crm import service as people
from server.identity import service as identity
from server.identity import totp
from server.identity.service import (
    create_customer_account,
    create_staff,
    customer_sign_in,
    staff_sign_in,
)
from server.web.auth import SESSION_COOKIES
from tests.support import csrf_from

HOST = "testserver.local"
BASE_URL = f"https://{HOST}"
HTMX = {"HX-Request": "true"}
FACTORIES: dict[str, Callable[[], Litestar]] = {"backoffice": create_backoffice, "portal": create_portal}
STAFF_PASSWORD = "staff-password-for-tests"
CUSTOMER_PASSWORD = "customer-password-for-tests"
HREF_RE = re.compile(r'(?:href|action|hx-get|hx-post|src)="([^"]*)"')

Client = httpx.AsyncClient


def make_app(face: str) -> Litestar:
    """A fresh app of one face ("portal" or "backoffice")."""
    return FACTORIES[face]()


@asynccontextmanager
async def face_client(face: str) -> AsyncIterator[Client]:
    """A client over https (so the Secure `__Host-` cookies are kept), with the app's lifespan run.

    Not litestar's AsyncTestClient: it runs the app in a thread with its own event loop, so on
    PostgreSQL the app's connection pool (started by on_startup on the process-wide engine) would be
    shared with the test's own queries across two loops, which asyncpg does not survive. Here the
    app, its pool and the test's queries share the test's loop. Redirects are not followed: the
    redirects themselves are what the tests check.
    """
    app = make_app(face)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # litestar's scope types are narrower
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url=BASE_URL,
                                                  follow_redirects=False) as client:
        yield client


async def csrf_token(client: Client) -> str:
    """Fetch the sign-in page (which sets the CSRF cookie) and return the form token."""
    response = await client.get("/signin")
    if response.status_code == 303:  # already signed in: any page of ours carries the token
        response = await client.get(response.headers["location"])
    assert response.status_code == 200, response.text
    return csrf_from(response.text)


async def post_form(client: Client, url: str, data: Mapping[str, str], csrf: str,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
    """POST an url-encoded form carrying the CSRF token, as a browser would."""
    return await client.post(url, data={**data, "_csrf_token": csrf}, headers=dict(headers or {}))


async def sign_in_attempt(client: Client, login: str, password: str,
                          csrf: str | None = None) -> httpx.Response:
    token = csrf or await csrf_token(client)
    return await post_form(client, "/signin", {"login": login, "password": password}, token)


async def signed_in(client: Client, login: str, password: str) -> str:
    """Sign in through the form (password, then the authenticator code for staff) and return the CSRF
    token to use for later POSTs."""
    token = await csrf_token(client)
    response = await sign_in_attempt(client, login, password, token)
    assert response.status_code == 303, f"sign-in as {login} failed: {response.status_code}"
    assert response.headers["location"] != "/signin/enrol", f"{login} has no authenticator: use make_staff"
    if response.headers["location"] == "/signin/mfa":
        response = await post_form(client, "/signin/mfa", {"code": await totp_code(login)}, token)
        assert response.status_code == 303, f"second step as {login} failed: {response.status_code}"
    return token


# Staff made here enrol an authenticator as a real user would; the tests play the app.
TOTP_SECRETS: dict[str, str] = {}
_LAST_STEP: dict[str, int] = {}


async def totp_code(username: str) -> str:
    """The code an authenticator app would show for the next step the server still accepts (codes are
    single-use and the server takes one step either side of now, so a quick succession waits)."""
    now = int(time.time() // totp.STEP)
    step = max(_LAST_STEP.get(username, 0) + 1, now - 1)
    if step > now + 1:
        await asyncio.sleep((step - 1) * totp.STEP - time.time() + 0.05)
    _LAST_STEP[username] = step
    return pyotp.TOTP(TOTP_SECRETS[username]).at(step * totp.STEP)


async def enrol_totp(username: str, account_id: uuid.UUID) -> None:
    enrolment = totp.begin_enrolment(account_id, username)
    TOTP_SECRETS[username] = enrolment.secret
    _LAST_STEP.pop(username, None)
    codes = await totp.confirm_enrolment(system_actor("test"), account_id, enrolment.sealed,
                                         await totp_code(username))
    assert codes, f"enrolment of {username} failed"


async def make_staff(username: str, *roles: str, team: str | None = None, mfa: bool = True) -> str:
    """A staff account with the given roles and (unless mfa=False) an enrolled authenticator."""
    account_id = await create_staff(username, STAFF_PASSWORD, list(roles), team=team)
    if mfa:
        await enrol_totp(username, account_id)
    return username


@dataclass(frozen=True)
class Customer:
    person_id: uuid.UUID
    email: str
    password: str = CUSTOMER_PASSWORD


async def make_person(values: Mapping[str, str]) -> uuid.UUID:
    return await people.create_person(system_actor("test"), values)


async def make_customer(values: Mapping[str, str]) -> Customer:
    """A person with a portal account (created by the system actor)."""
    person_id = await make_person(values)
    await create_customer_account(person_id, values["email"], CUSTOMER_PASSWORD)
    return Customer(person_id, values["email"])


@dataclass(frozen=True)
class Event:
    action: str
    entity: str
    outcome: str
    actor_kind: str
    role: str
    purpose: str
    reason: str
    fields: dict[str, str]
    subjects: list[str]


async def last_seq() -> int:
    rows = await AuditEvent.select(AuditEvent.seq).order_by(AuditEvent.seq, ascending=False).limit(1)
    return int(rows[0]["seq"]) if rows else 0


async def events_since(seq: int) -> list[Event]:
    """Audit events appended after position `seq`, oldest first."""
    rows = await AuditEvent.select().where(AuditEvent.seq > seq).order_by(AuditEvent.seq)
    return [
        Event(action=r["action"], entity=r["entity"], outcome=r["outcome"], actor_kind=r["actor_kind"],
              role=r["role"], purpose=r["purpose"], reason=r["reason"],
              fields=json.loads(r["fields"] or "{}"), subjects=json.loads(r["subjects"] or "[]"))
        for r in rows
    ]


def summary(events: list[Event]) -> list[tuple[str, str, str]]:
    """(action, entity, outcome) of each event, the shape matrix expectations are written in."""
    return [(e.action, e.entity, e.outcome) for e in events]


def links_of(html: str) -> list[str]:
    """Every URL the page points at: links, form actions, htmx requests and assets."""
    return HREF_RE.findall(html)


def has_cookie(response: httpx.Response, name: str) -> bool:
    return any(h.startswith(f"{name}=") for h in response.headers.get_list("set-cookie"))


def set_cookie_header(response: httpx.Response, name: str) -> str:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert found, f"response sets no {name} cookie"
    return found[-1]


def cookie_value(response: httpx.Response, name: str) -> str:
    return set_cookie_header(response, name).split(";", 1)[0].split("=", 1)[1]


def without_html_shell(text: str) -> bool:
    return "<html" not in text.lower() and "<body" not in text.lower()



async def pseudonym_of(person_id: uuid.UUID) -> str:
    """The pseudonym audit events use for a person."""
    return await gateway.person_pseudonym(system_actor("test"), person_id)


async def staff_session(username: str, password: str = STAFF_PASSWORD) -> str:
    """A live backoffice session token, made by the real sign-in services, password then authenticator
    code (no form round trip)."""
    started = await staff_sign_in(username, password, "face-test-setup", uuid.uuid4().hex)
    if started.stage == "full":
        return started.token
    pending = await identity.pending_signin(started.token)
    assert pending is not None and pending.stage == "mfa", f"{username} has no authenticator enrolled"
    factor = await totp.check_code(pending.account, await totp_code(username))
    assert factor == "totp", f"the authenticator code of {username} was refused"
    return (await identity.complete_signin(pending, factor, uuid.uuid4().hex)).token


async def customer_session(email: str, password: str = CUSTOMER_PASSWORD) -> str:
    """A live portal session token, made by the real sign-in service (no form round trip)."""
    return (await customer_sign_in(email, password, "face-test-setup", uuid.uuid4().hex)).token


def use_cookies(client: Client, cookies: Mapping[str, str]) -> None:
    """Replace both faces' session cookies in the client's jar with `cookies` (empty: anonymous)."""
    names = set(SESSION_COOKIES.values())
    for cookie in [c for c in client.cookies.jar if c.name in names]:
        client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
    for name, value in cookies.items():
        client.cookies.set(name, value, domain=HOST)
