"""The permission matrix: every route of both faces, for every kind of visitor, with status and audit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from server.actor import system_actor
from server.crm import service as people
from server.web.auth import SESSION_COOKIES
from tests.faces._client import (
    CUSTOMER_PASSWORD,
    HTMX,
    STAFF_PASSWORD,
    Client,
    Event,
    csrf_token,
    customer_session,
    events_since,
    face_client,
    last_seq,
    make_app,
    make_customer,
    make_staff,
    pseudonym_of,
    staff_session,
    summary,
    use_cookies,
)
from tests.faces.matrix_base import (
    NEW_PERSON,
    NEW_PHONE,
    NOTES_READ,
    PAGE,
    PERSON_READ,
    REVEAL,
    SIGN_IN,
    SIGNIN_FAILED,
    WRONG,
    Entry,
    Expect,
    denied,
    ok,
)
from tests.faces.matrix_email import ENTRIES as EMAIL_ENTRIES
from tests.faces.matrix_identity import IDENTITY_ENTRIES
from tests.faces.matrix_oidc import ENTRIES as OIDC_ENTRIES
from tests.faces.matrix_passkeys import ENTRIES as PASSKEY_ENTRIES
from tests.support import ERIKA, MAX

PRINCIPALS = ("anonymous", "erika", "max", "no_role", "out_of_scope", "allowed")
# What would give Erika away in a page: everything but the family name she shares with Max.
ERIKA_TELLS = ("Erika", ERIKA["email"], ERIKA["phone"], "Heidestraße", ERIKA["birth_date"], "1964-")


MATRIX: list[Entry] = [
    # ---- backoffice: a customer's portal cookie is ignored here, so erika and max are anonymous.
    Entry("backoffice", "GET", "/healthz", PAGE, PAGE, PAGE, PAGE, PAGE, guarded=False),
    Entry("backoffice", "GET", "/signin", PAGE, PAGE, PAGE, Expect(303, "/"), Expect(303, "/"), guarded=False),
    Entry("backoffice", "POST", "/signin", SIGNIN_FAILED, SIGNIN_FAILED, SIGNIN_FAILED,
          SIGNIN_FAILED,
          # The password is right; the sign-in waits for the authenticator code, so nothing is recorded yet.
          Expect(303, "/signin/mfa", (), {"login": "admin", "password": STAFF_PASSWORD}),
          form={"login": "admin", "password": WRONG}, guarded=False),
    Entry("backoffice", "POST", "/signout", SIGN_IN, SIGN_IN, SIGN_IN,
          ok(303, ("signout", "session"), location="/signin"),
          ok(303, ("signout", "session"), location="/signin"), guarded=False),
    # The start page of a compliance officer is the audit log; everyone else's the people list.
    Entry("backoffice", "GET", "/", SIGN_IN, SIGN_IN, SIGN_IN, Expect(303, "/audit"), Expect(303, "/people")),
    Entry("backoffice", "GET", "/people", SIGN_IN, SIGN_IN, SIGN_IN, denied("list"),
          ok(200, ("list", "crm_person")), out_of_scope=ok(200, ("list", "crm_person"))),
    Entry("backoffice", "POST", "/people/search", SIGN_IN, SIGN_IN, SIGN_IN, denied("search"),
          ok(200, ("search", "crm_person")), form={"query": ERIKA["email"]},
          out_of_scope=ok(200, ("search", "crm_person"))),
    # An empty form holds no personal data; the create itself is refused to the role below.
    Entry("backoffice", "GET", "/people/new", SIGN_IN, SIGN_IN, SIGN_IN, PAGE, PAGE),
    Entry("backoffice", "POST", "/people", SIGN_IN, SIGN_IN, SIGN_IN, denied("create"),
          ok(303, ("create", "crm_person"), location="/people/*"), form=NEW_PERSON),
    Entry("backoffice", "GET", "/people/{person_id:str}", SIGN_IN, SIGN_IN, SIGN_IN, denied("read"),
          ok(200, PERSON_READ, NOTES_READ), out_of_scope=denied("read")),
    Entry("backoffice", "GET", "/people/{person_id:str}/edit", SIGN_IN, SIGN_IN, SIGN_IN, denied("read"),
          ok(200, PERSON_READ), out_of_scope=denied("read")),
    Entry("backoffice", "POST", "/people/{person_id:str}/edit", SIGN_IN, SIGN_IN, SIGN_IN, denied("read"),
          ok(303, PERSON_READ, ("update", "crm_person"), location="/people/*"), form=NEW_PHONE,
          out_of_scope=denied("read")),
    Entry("backoffice", "POST", "/people/{person_id:str}/notes", SIGN_IN, SIGN_IN, SIGN_IN,
          denied("create", "crm_note"), ok(303, ("create", "crm_note"), location="/people/*"),
          form={"body": "Called about the invoice."}, out_of_scope=denied("create", "crm_note")),
    Entry("backoffice", "POST", "/people/{person_id:str}/reveal", SIGN_IN, SIGN_IN, SIGN_IN, denied("reveal"),
          ok(303, ("reveal", "crm_person"), location="/people/*"), form=REVEAL, out_of_scope=denied("reveal")),
    # Erasure: support may not (the policy refuses and records it); an admin erases after typing ERASE.
    Entry("backoffice", "POST", "/people/{person_id:str}/erase", SIGN_IN, SIGN_IN, SIGN_IN, denied("erase"),
          ok(303, ("erase", "crm_person"), location="/people?erased=1"), form={"confirm": "ERASE"},
          no_role_is="support", out_of_scope=denied("erase")),
    # The guard refuses before any data is touched, so nothing reaches the audit log.
    Entry("backoffice", "GET", "/audit", SIGN_IN, SIGN_IN, SIGN_IN, Expect(403),
          ok(200, ("view", "audit_event")), no_role_is="support", allowed_is="compliance"),
    # Filters by a person's email are POSTs (the email stays out of URLs); the gateway records the search.
    Entry("backoffice", "POST", "/audit/search", SIGN_IN, SIGN_IN, SIGN_IN, Expect(403),
          ok(200, ("search", "crm_person"), ("view", "audit_event")), form={"person": ERIKA["email"]},
          no_role_is="support", allowed_is="compliance"),
    # An export is recorded before its first byte is streamed.
    Entry("backoffice", "GET", "/audit/export", SIGN_IN, SIGN_IN, SIGN_IN, Expect(403),
          ok(200, ("export", "audit_event")), no_role_is="support", allowed_is="compliance"),
    Entry("backoffice", "POST", "/audit/export", SIGN_IN, SIGN_IN, SIGN_IN, Expect(403),
          ok(200, ("search", "crm_person"), ("export", "audit_event")),
          form={"person": ERIKA["email"], "format": "jsonl"}, no_role_is="support", allowed_is="compliance"),
    # The record of processing holds no personal data, but who viewed or exported it is recorded.
    Entry("backoffice", "GET", "/records", SIGN_IN, SIGN_IN, SIGN_IN, Expect(403),
          ok(200, ("view", "processing_record")), no_role_is="support", allowed_is="compliance"),
    Entry("backoffice", "GET", "/records/download", SIGN_IN, SIGN_IN, SIGN_IN, Expect(403),
          ok(200, ("export", "processing_record")), no_role_is="support", allowed_is="compliance"),
    # ---- portal: the allowed case is the customer on their own data; a staff cookie is ignored.
    Entry("portal", "GET", "/healthz", PAGE, PAGE, PAGE, PAGE, None, guarded=False),
    Entry("portal", "GET", "/signin", PAGE, Expect(303, "/profile"), Expect(303, "/profile"), PAGE, None,
          guarded=False),
    Entry("portal", "POST", "/signin", SIGNIN_FAILED,
          Expect(303, "/profile", (("signin", "session", "ok"),),
                 {"login": ERIKA["email"], "password": CUSTOMER_PASSWORD}),
          SIGNIN_FAILED, SIGNIN_FAILED, None,
          form={"login": ERIKA["email"], "password": WRONG}, guarded=False),
    Entry("portal", "POST", "/signout", SIGN_IN, ok(303, ("signout", "session"), location="/signin"),
          ok(303, ("signout", "session"), location="/signin"), SIGN_IN, None, guarded=False),
    Entry("portal", "GET", "/", SIGN_IN, Expect(303, "/profile"), Expect(303, "/profile"), SIGN_IN, None),
    Entry("portal", "GET", "/profile", SIGN_IN, ok(200, PERSON_READ), ok(200, PERSON_READ), SIGN_IN, None),
    Entry("portal", "GET", "/profile/edit", SIGN_IN, ok(200, PERSON_READ), ok(200, PERSON_READ), SIGN_IN, None),
    Entry("portal", "POST", "/profile/edit", SIGN_IN,
          ok(303, PERSON_READ, ("update", "crm_person"), location="/profile?saved=1"),
          ok(303, PERSON_READ, ("update", "crm_person"), location="/profile?saved=1"), SIGN_IN, None,
          form=NEW_PHONE),
    # Reading one's own access log is not itself an access to personal data: no event.
    Entry("portal", "GET", "/access", SIGN_IN, PAGE, PAGE, SIGN_IN, None),
    Entry("portal", "GET", "/access/download", SIGN_IN, PAGE, PAGE, SIGN_IN, None),
    # Second factors, passkeys, single sign-on, emailed links, sessions: one file per area.
    *IDENTITY_ENTRIES,
    *OIDC_ENTRIES,
    *EMAIL_ENTRIES,
    *PASSKEY_ENTRIES,
]


@dataclass(frozen=True)
class World:
    erika_id: uuid.UUID
    erika_pseudonym: str
    max_pseudonym: str
    customers: dict[str, str]
    """Principal (erika, max) -> portal session token."""
    staff: dict[str, str]
    """Username (= role) -> backoffice session token."""

    def cookies(self, face: str, principal: str, entry: Entry) -> dict[str, str]:
        """The cookies this principal's browser would send, plus a replay of its token under this face's
        cookie name, so a token is proven to be bound to the face it was issued by."""
        own = SESSION_COOKIES[face]
        if principal == "anonymous":
            return {}
        if principal in self.customers:
            token = self.customers[principal]
            return {SESSION_COOKIES["portal"]: token, own: token}
        role = {"no_role": entry.no_role_is, "out_of_scope": "sales"}.get(principal, entry.allowed_is)
        token = self.staff[role]
        return {SESSION_COOKIES["backoffice"]: token, own: token}


@pytest.fixture
async def world(db: None) -> World:
    erika, max_ = await make_customer(ERIKA), await make_customer(MAX)
    await people.add_note(system_actor("test"), erika.person_id, "Prefers email.")
    for role in ("admin", "support", "compliance", "sales"):  # sales owns nobody: Erika is out of scope
        await make_staff(role, role)
    tokens = await asyncio.gather(
        customer_session(erika.email), customer_session(max_.email),
        *(staff_session(role) for role in ("admin", "support", "compliance", "sales")),
    )
    return World(
        erika_id=erika.person_id, erika_pseudonym=await pseudonym_of(erika.person_id),
        max_pseudonym=await pseudonym_of(max_.person_id),
        customers={"erika": tokens[0], "max": tokens[1]},
        staff={"admin": tokens[2], "support": tokens[3], "compliance": tokens[4], "sales": tokens[5]},
    )


async def _request(client: Client, entry: Entry, path: str, form: Mapping[str, str], csrf: str,
                   headers: Mapping[str, str] | None = None) -> tuple[int, str, str, Mapping[str, str]]:
    if entry.method == "GET":
        response = await client.get(path, headers=dict(headers or {}))
    else:
        response = await client.post(path, data={**form, "_csrf_token": csrf}, headers=dict(headers or {}))
    return response.status_code, response.headers.get("location", ""), response.text, response.headers


def _matches(location: str, expected: str) -> bool:
    if expected.endswith("*"):
        return location.startswith(expected[:-1])
    return location == expected


def _sees_erika(principal: str, entry: Entry) -> bool:
    """Who may be shown Erika's data by this route: herself on the portal, the allowed staff role."""
    if entry.face == "portal":
        return principal == "erika"
    return principal == "allowed"


def _mailer_read(event: Event) -> bool:
    """The one processing of someone's data any visitor may cause: the system mailer reading the address
    on record to send its owner (never the asker) a link or a "you have an account" mail."""
    return event.actor_kind == "system" and event.purpose == "account_security" and event.action == "read"


@pytest.mark.parametrize("entry", MATRIX, ids=[" ".join(e.key) for e in MATRIX])
async def test_each_route_answers_each_principal_as_the_matrix_says(entry: Entry, world: World) -> None:
    async with face_client(entry.face) as client:
        csrf = await csrf_token(client)
        path = entry.path(world.erika_id)
        for principal in PRINCIPALS:
            expect = entry.expect(principal)
            if expect is None:
                continue
            where = f"{entry.method} {path} as {principal}"
            use_cookies(client, world.cookies(entry.face, principal, entry))
            before = await last_seq()
            status, location, body, _ = await _request(client, entry, path, expect.form or entry.form, csrf)
            events = await events_since(before)
            assert status == expect.status, f"{where}: status {status}, expected {expect.status}"
            if expect.location is not None:
                assert _matches(location, expect.location), f"{where}: Location {location!r}"
            assert summary(events) == list(expect.events), f"{where}: audit events"
            if not _sees_erika(principal, entry):
                leaked = [tell for tell in ERIKA_TELLS if tell in body]
                assert not leaked, f"{where}: response shows Erika's {leaked}"
                named = [e for e in events if world.erika_pseudonym in e.subjects and e.outcome != "denied"
                         and not _mailer_read(e)]
                assert not named, f"{where}: Erika's data was processed: {summary(named)}"
            if "{person_id:str}" in entry.route:
                # A refused attempt on Erika's record names her, so her access log shows it.
                refused = [e for e in events if e.outcome == "denied"]
                assert all(e.subjects == [world.erika_pseudonym] for e in refused), where
            if principal == "max" and entry.face == "portal":
                assert all(e.subjects in ([], [world.max_pseudonym]) for e in events if not _mailer_read(e)), where


@pytest.mark.parametrize("entry", [e for e in MATRIX if e.guarded], ids=[" ".join(e.key) for e in MATRIX
                                                                            if e.guarded])
async def test_an_anonymous_htmx_request_to_a_guarded_route_gets_401_with_hx_redirect(entry: Entry,
                                                                                       db: None) -> None:
    async with face_client(entry.face) as client:
        csrf = await csrf_token(client)
        before = await last_seq()
        status, location, body, headers = await _request(client, entry, entry.path(uuid.uuid4()), entry.form,
                                                         csrf, HTMX)
        assert status == 401
        assert headers.get("hx-redirect") == "/signin"
        assert location == "" and body == ""
        assert await events_since(before) == []


def _routes(face: str) -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for route in make_app(face).routes:
        if route.path.startswith("/static"):
            continue
        for method in route.methods - {"HEAD", "OPTIONS"}:
            found.add((face, method, route.path))
    return found


def test_every_route_has_a_matrix_entry() -> None:
    listed = [e.key for e in MATRIX]
    routes = _routes("backoffice") | _routes("portal")
    missing = sorted(routes - set(listed))
    assert not missing, "routes missing from the permission matrix: " + ", ".join(
        f"{face} {method} {path}" for face, method, path in missing)
    stale = sorted(set(listed) - routes)
    assert not stale, "matrix entries for routes that do not exist: " + ", ".join(" ".join(k) for k in stale)
    assert len(listed) == len(set(listed)), "a route appears twice in the matrix"
