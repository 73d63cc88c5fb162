"""Backoffice journeys over HTTP: create, edit, search, reveal, notes and the paged people list."""

from __future__ import annotations

import html
import re
import uuid

from server import gateway
from tests.faces._client import (
    HTMX,
    STAFF_PASSWORD,
    Client,
    events_since,
    face_client,
    last_seq,
    links_of,
    make_person,
    make_staff,
    post_form,
    signed_in,
    summary,
    without_html_shell,
)
from tests.support import ERIKA, MAX, staff

TAG_RE = re.compile(r"<[^>]+>")
PERSON_URL_RE = re.compile(r"^/people/([0-9a-f-]{36})\?created=1$")
ROW_LINK_RE = re.compile(r'<td><a href="/people/([0-9a-f-]{36})">')
REASON = "customer_request"


def text_of(page: str) -> str:
    """The page's visible text with whitespace collapsed, for asserting on messages."""
    return " ".join(html.unescape(TAG_RE.sub(" ", page)).split())


async def _admin(client: Client) -> str:
    await make_staff("admin", "admin")
    return await signed_in(client, "admin", STAFF_PASSWORD)


async def test_creating_a_person_through_the_form_redirects_to_their_page(db: None) -> None:
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        response = await post_form(client, "/people", ERIKA, csrf)
        assert response.status_code == 303
        match = PERSON_URL_RE.match(response.headers["location"])
        assert match, response.headers["location"]
        page = await client.get(response.headers["location"])
    assert page.status_code == 200
    shown = text_of(page.text)
    assert "Person created." in shown
    assert "Erika Mustermann" in shown and ERIKA["email"] in shown and ERIKA["phone"] in shown
    assert "1964-08-12" not in shown, "the birth date is shown unmasked without a reveal"


async def test_an_invalid_email_comes_back_422_with_the_input_kept_and_the_field_named(db: None) -> None:
    form = {**ERIKA, "email": "erika-at-example.org"}
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        before = await last_seq()
        response = await post_form(client, "/people", form, csrf)
    assert response.status_code == 422
    assert '<form method="post" action="/people"' in response.text
    for field in ("given_name", "family_name", "email", "phone", "birth_date"):
        assert f'value="{html.escape(form[field])}"' in response.text, f"{field} was not kept"
    assert html.escape(form["address"]) in response.text
    assert ("Email is not an email address we can use (An email address must have an @-sign.); use the form "
            "name@example.org") in text_of(response.text)
    assert re.search(r'<input id="email"[^>]*aria-invalid="true"', response.text), "email not marked invalid"
    assert await events_since(before) == [], "a refused form must not create anyone"


async def test_editing_a_person_saves_the_change_and_says_so(db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        form_page = await client.get(f"/people/{person_id}/edit")
        assert form_page.status_code == 200 and f'value="{ERIKA["phone"]}"' in form_page.text
        changed = {k: v for k, v in ERIKA.items() if k != "birth_date"} | {"phone": "+49 221 999 000"}
        response = await post_form(client, f"/people/{person_id}/edit", changed, csrf)
        assert response.status_code == 303
        assert response.headers["location"] == f"/people/{person_id}?saved=1"
        page = await client.get(response.headers["location"])
    shown = text_of(page.text)
    assert "Changes saved." in shown and "+49 221 999 000" in shown and ERIKA["phone"] not in shown


async def test_an_invalid_edit_comes_back_422_and_changes_nothing(db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        response = await post_form(client, f"/people/{person_id}/edit", {"phone": "call me maybe"}, csrf)
        assert response.status_code == 422
        assert 'value="call me maybe"' in response.text
        assert "Phone may hold only digits" in text_of(response.text)
        page = await client.get(f"/people/{person_id}")
    assert ERIKA["phone"] in page.text


async def test_the_email_search_finds_the_person_and_puts_the_address_in_no_url(db: None) -> None:
    erika_id = await make_person(ERIKA)
    max_id = await make_person(MAX)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        before = await last_seq()
        response = await post_form(client, "/people/search", {"query": "  Erika.Mustermann@EXAMPLE.org "}, csrf)
        fragment = await post_form(client, "/people/search", {"query": ERIKA["email"]}, csrf, HTMX)
        listing = await client.get("/people")
    assert response.status_code == fragment.status_code == listing.status_code == 200
    assert f'href="/people/{erika_id}"' in response.text
    assert str(max_id) not in response.text
    assert summary(await events_since(before))[0] == ("search", "crm_person", "ok")
    assert without_html_shell(fragment.text) and f'href="/people/{erika_id}"' in fragment.text
    for page in (response, fragment, listing):
        urls = links_of(page.text)
        assert urls, "the page has no links at all"
        leaked = [u for u in urls if "@" in u or "%40" in u.lower() or "mustermann" in u.lower()]
        assert not leaked, f"personal data in URLs: {leaked}"


async def test_a_search_for_half_an_email_address_is_refused_422_naming_the_fix(db: None) -> None:
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        response = await post_form(client, "/people/search", {"query": "erika.mustermann@"}, csrf)
    assert response.status_code == 422
    assert "type all of it, e.g. name@example.org (email search is exact)" in text_of(response.text)


async def test_a_name_search_finds_everyone_with_that_name_with_or_without_umlauts(db: None) -> None:
    erika = await make_person(ERIKA)
    max_ = await make_person(MAX)
    mueller = await make_person({"given_name": "Jürgen", "family_name": "Müller", "email": "jm@example.com"})
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        both = await post_form(client, "/people/search", {"query": "mustermann"}, csrf, HTMX)
        erika_only = await post_form(client, "/people/search", {"query": "erika MUSTERMANN"}, csrf, HTMX)
        spelled = await post_form(client, "/people/search", {"query": "Mueller"}, csrf, HTMX)
        by_phone = await post_form(client, "/people/search", {"query": "030 1234567"}, csrf, HTMX)
    assert f"/people/{erika}" in both.text and f"/people/{max_}" in both.text
    assert f"/people/{erika}" in erika_only.text and f"/people/{max_}" not in erika_only.text
    assert f"/people/{mueller}" in spelled.text and f"/people/{erika}" not in spelled.text
    assert f"/people/{erika}" in by_phone.text and f"/people/{max_}" not in by_phone.text


async def test_revealing_without_a_reason_is_refused_422_and_reveals_nothing(db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        before = await last_seq()
        page = await post_form(client, f"/people/{person_id}/reveal", {"field": "birth_date"}, csrf)
        fragment = await post_form(client, f"/people/{person_id}/reveal", {"field": "birth_date"}, csrf, HTMX)
    for response in (page, fragment):
        assert response.status_code == 422
        assert "1964-08-12" not in response.text
        assert "say why you need to see this value" in text_of(response.text)
    assert without_html_shell(fragment.text) and 'id="reveal-birth_date"' in fragment.text
    assert "reveal" not in [e.action for e in await events_since(before)]


async def test_revealing_with_a_reason_shows_the_full_birth_date_as_an_htmx_fragment(db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        detail = await client.get(f"/people/{person_id}")
        assert "1964-••-••" in detail.text and "1964-08-12" not in detail.text
        before = await last_seq()
        form = {"field": "birth_date", "reason_code": REASON, "ticket": "T-4711", "note": "caller on the phone"}
        fragment = await post_form(client, f"/people/{person_id}/reveal", form, csrf, HTMX)
    assert fragment.status_code == 200
    assert without_html_shell(fragment.text)
    assert 'id="reveal-birth_date"' in fragment.text and "1964-08-12" in fragment.text
    events = await events_since(before)
    assert summary(events) == [("reveal", "crm_person", "ok")]
    assert events[0].reason.startswith(f"{REASON} ticket=T-4711 note=")
    assert "caller" not in events[0].reason, "the note is recorded sealed, not in clear text"
    assert list(events[0].fields) == ["birth_date"]


async def test_revealing_without_htmx_returns_to_the_person_page_showing_the_value_for_a_while(db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        response = await post_form(client, f"/people/{person_id}/reveal",
                                   {"field": "birth_date", "reason_code": REASON}, csrf)
        assert response.status_code == 303
        assert response.headers["location"] == f"/people/{person_id}#reveal-birth_date"
        page = await client.get(f"/people/{person_id}")
    assert "<html" in page.text and "1964-08-12" in page.text
    assert "(revealed until" in text_of(page.text)


async def test_adding_a_note_shows_it_on_the_person_page(db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        response = await post_form(client, f"/people/{person_id}/notes", {"body": "Asked for a callback."}, csrf)
        assert response.status_code == 303
        assert response.headers["location"] == f"/people/{person_id}#notes"
        page = await client.get(f"/people/{person_id}")
        empty = await post_form(client, f"/people/{person_id}/notes", {"body": "   "}, csrf)
    assert "Asked for a callback." in page.text
    assert empty.status_code == 422
    assert "The note is empty; write the note first" in text_of(empty.text)


async def test_more_loads_the_next_people_as_table_rows_only(db: None) -> None:
    admin = staff("admin")
    created = {await gateway.create_person(admin, purpose="customer_service",
                                           values={"family_name": f"Person {n:02d}"}) for n in range(27)}
    async with face_client("backoffice") as client:
        await _admin(client)
        first = await client.get("/people")
        assert first.status_code == 200
        more = re.search(r'hx-get="([^"]+)"', first.text)
        assert more, "the first page has no 'More people' control"
        next_url = html.unescape(more.group(1))
        assert next_url.startswith("/people?after=")
        fragment = await client.get(next_url, headers=HTMX)
    first_ids = ROW_LINK_RE.findall(first.text)
    rest_ids = ROW_LINK_RE.findall(fragment.text)
    assert len(first_ids) == 25 and len(rest_ids) == 2
    assert fragment.status_code == 200 and without_html_shell(fragment.text)
    assert fragment.text.lstrip().startswith("<tr>") and 'id="more-row"' not in fragment.text
    assert {uuid.UUID(i) for i in first_ids + rest_ids} == created


async def test_erasing_needs_the_typed_word_and_then_removes_the_person(db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        refused = await post_form(client, f"/people/{person_id}/erase", {"confirm": "yes"}, csrf)
        assert refused.status_code == 422
        assert "type ERASE to confirm; erasure cannot be undone" in text_of(refused.text)
        erased = await post_form(client, f"/people/{person_id}/erase", {"confirm": "ERASE"}, csrf)
        assert erased.status_code == 303 and erased.headers["location"] == "/people?erased=1"
        gone = await client.get(f"/people/{person_id}")
    assert gone.status_code == 404


async def test_a_reveal_whose_ticket_could_hold_a_name_is_refused_422_and_the_form_offers_coded_reasons(
        db: None) -> None:
    person_id = await make_person(ERIKA)
    async with face_client("backoffice") as client:
        csrf = await _admin(client)
        detail = await client.get(f"/people/{person_id}")
        before = await last_seq()
        form = {"field": "birth_date", "reason_code": REASON, "ticket": "Erika Mustermann", "note": "on the phone"}
        fragment = await post_form(client, f"/people/{person_id}/reveal", form, csrf, HTMX)
    assert '<option value="customer_request">The customer asked for it</option>' in detail.text
    assert fragment.status_code == 422 and "1964-08-12" not in fragment.text
    assert "Ticket reference: a ticket reference is up to 40 letters, digits and . _ # / -" in text_of(fragment.text)
    assert 'value="on the phone"' in fragment.text and '<option value="customer_request" selected>' in fragment.text
    assert await events_since(before) == []
