"""Portal journeys over HTTP: Erika views and corrects her data and sees who accessed it."""

from __future__ import annotations

import html
import re

import pytest

from server import gateway
from server.errors import PolicyDenied
from tests.faces._client import (
    CUSTOMER_PASSWORD,
    Client,
    Customer,
    face_client,
    make_customer,
    post_form,
    signed_in,
)
from tests.support import ERIKA, MAX, staff

TAG_RE = re.compile(r"<[^>]+>")
ROW_RE = re.compile(r"<tr>(.*?)</tr>", re.DOTALL)
MAX_NOTE = "Max asked about his contract"


def text_of(page: str) -> str:
    return " ".join(html.unescape(TAG_RE.sub(" ", page)).split())


def access_rows(page: str) -> list[str]:
    """The visible text of each row of the access table's body."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [text_of(row) for row in ROW_RE.findall(body)]


async def _erika(client: Client) -> tuple[Customer, str]:
    erika = await make_customer(ERIKA)
    return erika, await signed_in(client, ERIKA["email"], CUSTOMER_PASSWORD)


async def test_erika_signs_in_and_sees_her_whole_profile(db: None) -> None:
    async with face_client("portal") as client:
        await _erika(client)
        page = await client.get("/profile")
    assert page.status_code == 200
    shown = text_of(page.text)
    for label, value in [("Given name", "Erika"), ("Family name", "Mustermann"), ("Email", ERIKA["email"]),
                         ("Phone", ERIKA["phone"]), ("Address", ERIKA["address"]),
                         ("Date of birth", ERIKA["birth_date"])]:
        assert f"{label} {value}" in shown, f"{label} should show {value!r}"


async def test_erika_corrects_her_phone_and_sees_the_new_value(db: None) -> None:
    async with face_client("portal") as client:
        _, csrf = await _erika(client)
        form = await client.get("/profile/edit")
        assert form.status_code == 200 and f'value="{ERIKA["phone"]}"' in form.text
        response = await post_form(client, "/profile/edit", {**ERIKA, "phone": "+49 221 555 0199"}, csrf)
        assert response.status_code == 303 and response.headers["location"] == "/profile?saved=1"
        page = await client.get(response.headers["location"])
    shown = text_of(page.text)
    assert "Your changes are saved." in shown
    assert "Phone +49 221 555 0199" in shown and ERIKA["phone"] not in shown
    assert f"Email {ERIKA['email']}" in shown, "fields she did not touch must stay as they were"


async def test_an_invalid_birth_date_is_refused_422_naming_the_problem(db: None) -> None:
    async with face_client("portal") as client:
        _, csrf = await _erika(client)
        not_a_date = await post_form(client, "/profile/edit", {**ERIKA, "birth_date": "1964-13-45"}, csrf)
        future = await post_form(client, "/profile/edit", {**ERIKA, "birth_date": "2999-01-01"}, csrf)
        page = await client.get("/profile")
    assert not_a_date.status_code == future.status_code == 422
    assert "Date of birth is not a date; use YYYY-MM-DD, e.g. 1964-08-12" in text_of(not_a_date.text)
    assert 'value="1964-13-45"' in not_a_date.text, "the input was not kept"
    assert "Date of birth lies in the future; check the year" in text_of(future.text)
    assert f"Date of birth {ERIKA['birth_date']}" in text_of(page.text)


async def test_the_access_page_lists_the_staff_read_and_nothing_about_max(db: None) -> None:
    admin = staff("admin")
    async with face_client("portal") as client:
        erika, _ = await _erika(client)
        max_ = await make_customer(MAX)
        await gateway.get_person(admin, purpose="customer_service", person_id=erika.person_id)
        await gateway.get_person(admin, purpose="sales", person_id=max_.person_id)
        await gateway.reveal_field(admin, purpose="sales", person_id=max_.person_id, field="birth_date",
                                   reason="customer_request", note=MAX_NOTE)
        page = await client.get("/access")
    assert page.status_code == 200
    rows = access_rows(page.text)
    assert len(rows) == 2, rows  # the system's create and the admin's read; none of Max's three
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC ", row) for row in rows), rows
    assert "Staff (admin) viewed" in rows[0] and "customer service ok" in rows[0]
    assert "system created" in rows[1]
    shown = text_of(page.text)
    assert MAX_NOTE not in shown and " sales " not in f" {shown} "


async def test_a_refused_staff_attempt_on_her_record_shows_in_her_access_log(db: None) -> None:
    async with face_client("portal") as client:
        erika, _ = await _erika(client)
        with pytest.raises(PolicyDenied):
            await gateway.get_person(staff("compliance"), purpose="customer_service",
                                     person_id=erika.person_id)
        page = await client.get("/access")
    rows = access_rows(page.text)
    assert len(rows) == 2, rows
    assert "Staff (compliance) viewed" in rows[0] and rows[0].endswith("customer service refused")


async def test_the_access_log_shows_a_reveal_by_its_reason_title_ticket_and_the_note_staff_wrote(db: None) -> None:
    async with face_client("portal") as client:
        erika, _ = await _erika(client)
        await gateway.reveal_field(staff("admin"), purpose="customer_service", person_id=erika.person_id,
                                   field="birth_date", reason="identity_check", ticket="T-4711",
                                   note="Erika asked us to confirm her date of birth")
        page = await client.get("/access")
    revealed = [row for row in access_rows(page.text) if "revealed" in row]
    assert len(revealed) == 1, access_rows(page.text)
    assert ("customer service — Identity check (ticket T-4711): Erika asked us to confirm her date of birth"
            in revealed[0])
    assert "note=" not in page.text, "the sealed note is never shown as ciphertext"
