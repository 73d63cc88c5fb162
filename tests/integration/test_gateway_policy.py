"""The gateway applies the access policy per actor and purpose, and audits each decision."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from server import gateway
from server.db import raw
from server.errors import Invalid, PolicyDenied
from tests.support import ERIKA, MAX, customer, staff

PURPOSE = "customer_service"
MAX_FULL = {**MAX, "address": "Musterweg 3, 80331 München"}


async def _events() -> list[dict[str, Any]]:
    return await raw("SELECT * FROM audit_event ORDER BY seq")


async def _erika_and_max() -> tuple[uuid.UUID, uuid.UUID]:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    max_ = await gateway.create_person(admin, purpose=PURPOSE, values=MAX_FULL)
    return erika, max_


async def test_a_customer_reads_their_own_record_with_the_birth_date_unmasked(db: None) -> None:
    erika, _ = await _erika_and_max()
    record = await gateway.get_person(customer(erika), purpose="self_service", person_id=erika)
    assert record["birth_date"] == ERIKA["birth_date"]
    assert not record.is_masked("birth_date")
    assert record["email"] == ERIKA["email"]
    event = (await _events())[-1]
    assert (event["action"], event["actor_kind"], event["outcome"]) == ("read", "customer", "ok")


async def test_a_customer_reading_someone_elses_record_is_denied_and_the_denial_is_audited(
    db: None,
) -> None:
    erika, max_ = await _erika_and_max()
    snooper = customer(erika)
    before = len(await _events())
    with pytest.raises(PolicyDenied):
        await gateway.get_person(snooper, purpose="self_service", person_id=max_)
    events = await _events()
    assert len(events) == before + 1
    denied = events[-1]
    assert (denied["action"], denied["outcome"], denied["actor_id"]) == ("read", "denied", snooper.id)
    assert denied["purpose"] == "self_service"
    assert set(json.loads(denied["fields"])) == set(gateway.PERSON_FIELDS)


async def test_a_compliance_officer_may_not_read_notes(db: None) -> None:
    erika, _ = await _erika_and_max()
    await gateway.add_note(staff("admin"), purpose=PURPOSE, person_id=erika, body="Prefers email.")
    officer = staff("compliance")
    with pytest.raises(PolicyDenied, match="crm_note"):
        await gateway.list_notes(officer, purpose="compliance_audit", person_id=erika)
    denied = (await _events())[-1]
    assert (denied["entity"], denied["outcome"], denied["actor_id"]) == ("crm_note", "denied", officer.id)


async def test_a_sales_update_writes_one_event_naming_only_the_changed_fields(db: None) -> None:
    sales = staff("sales")
    erika = await gateway.create_person(sales, purpose="sales", values=ERIKA)  # her owner is this sales rep
    before = len(await _events())
    await gateway.update_person(sales, purpose="sales", person_id=erika,
                                changes={"phone": "+49 221 9876543", "address": "Ring 1, 50667 Köln"})
    events = await _events()
    assert len(events) == before + 1
    event = events[-1]
    assert (event["action"], event["actor_id"], event["outcome"]) == ("update", sales.id, "ok")
    assert set(json.loads(event["fields"])) == {"phone", "address"}
    record = await gateway.get_person(sales, purpose="sales", person_id=erika)
    assert record["phone"] == "+49 221 9876543"
    assert record["family_name"] == ERIKA["family_name"]


async def test_an_email_search_finds_a_person_whatever_the_case_of_the_address(db: None) -> None:
    erika, _ = await _erika_and_max()
    found = await gateway.find_people(staff("admin"), purpose=PURPOSE, field="email",
                                      query="Erika.Mustermann@Example.org")
    assert [r.id for r in found] == [erika]
    assert found[0]["email"] == ERIKA["email"]


async def test_an_email_search_for_another_address_finds_nobody(db: None) -> None:
    await _erika_and_max()
    found = await gateway.find_people(staff("admin"), purpose=PURPOSE, field="email",
                                      query="erika.musterfrau@example.org")
    assert found == []


async def test_a_reveal_without_a_reason_is_refused_and_writes_nothing(db: None) -> None:
    erika, _ = await _erika_and_max()
    before = len(await _events())
    for reason in ("", "   "):
        with pytest.raises(Invalid) as caught:
            await gateway.reveal_field(staff("admin"), purpose=PURPOSE, person_id=erika,
                                       field="birth_date", reason=reason)
        assert "reason" in caught.value.errors
    assert len(await _events()) == before


async def test_a_reveal_with_a_reason_shows_the_full_value_and_records_the_reason(db: None) -> None:
    erika, _ = await _erika_and_max()
    admin = staff("admin")
    value = await gateway.reveal_field(admin, purpose=PURPOSE, person_id=erika, field="birth_date",
                                       reason=" identity_check ", ticket="T-4711")
    assert value == ERIKA["birth_date"]
    event = (await _events())[-1]
    assert (event["action"], event["actor_id"], event["outcome"]) == ("reveal", admin.id, "ok")
    assert event["reason"] == "identity_check ticket=T-4711"
    assert set(json.loads(event["fields"])) == {"birth_date"}


async def test_a_record_repr_shows_no_value(db: None) -> None:
    erika, _ = await _erika_and_max()
    record = await gateway.get_person(customer(erika), purpose="self_service", person_id=erika)
    assert record["given_name"] == ERIKA["given_name"]
    shown = f"{record!r} {record!s}"
    for value in ERIKA.values():
        assert value not in shown
    assert "1964" not in shown
    assert "given_name" in shown


async def test_a_reveal_shows_the_field_to_that_member_of_staff_for_a_limited_time_only(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from server.gateway import reads as gateway_people

    sales, other = staff("sales"), staff("admin")
    pid = await gateway.create_person(sales, purpose="customer_service", values=ERIKA)
    assert (await gateway.get_person(sales, purpose="customer_service", person_id=pid)).is_masked("birth_date")
    await gateway.reveal_field(sales, purpose="customer_service", person_id=pid, field="birth_date",
                               reason="customer_request")
    shown = await gateway.get_person(sales, purpose="customer_service", person_id=pid)
    assert shown["birth_date"] == "1964-08-12" and not shown.is_masked("birth_date")
    assert "birth_date" in shown.extra["revealed_until"]
    events = await raw("SELECT fields FROM audit_event WHERE action = 'read' ORDER BY seq DESC LIMIT 1")
    assert "allow by reveal-grant by sales-reveal-birth-date" in events[0]["fields"]
    # another member of staff still sees the mask
    assert (await gateway.get_person(other, purpose="customer_service", person_id=pid)).is_masked("birth_date")
    # and once the grant has run out, so does the one who revealed it
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=11)
    monkeypatch.setattr(gateway_people, "_now", lambda: later)
    assert (await gateway.get_person(sales, purpose="customer_service", person_id=pid)).is_masked("birth_date")


async def test_sales_see_and_find_only_the_people_they_own_and_support_only_their_team(db: None) -> None:
    import dataclasses

    sales, other_sales = staff("sales"), staff("sales")
    support_here = dataclasses.replace(staff("support"), team="north")
    support_there = dataclasses.replace(staff("support"), team="south")
    owner_north = dataclasses.replace(sales, team="north")
    erika = await gateway.create_person(owner_north, purpose="sales", values=ERIKA)
    max_ = await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    assert [r.id for r in (await gateway.list_people(sales, purpose="sales")).items] == [erika]
    assert (await gateway.list_people(other_sales, purpose="sales")).items == []
    assert [r.id for r in (await gateway.list_people(support_here, purpose="customer_service")).items] == [erika]
    assert (await gateway.list_people(support_there, purpose="customer_service")).items == []
    found = await gateway.find_people(other_sales, purpose="sales", field="name", query="Mustermann")
    assert found == []  # out of scope people are not even candidates
    with pytest.raises(PolicyDenied):
        await gateway.get_person(other_sales, purpose="sales", person_id=erika)
    with pytest.raises(PolicyDenied):
        await gateway.get_person(sales, purpose="sales", person_id=max_)
    denied = await raw("SELECT subjects FROM audit_event WHERE outcome = 'denied'")
    assert len(denied) == 2  # each refusal is recorded and names the person it aimed at
