"""One request asks the database once per subject: a person's page reads the person and their notes in one
audited step, and later steps of the same request take the subject from the request's scope."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server import gateway
from server.db import raw
from server.errors import NotFound, PolicyDenied
from server.gateway import reads
from server.gateway.scope import request_scope
from tests.support import ERIKA, staff

PURPOSE = "customer_service"


async def _events() -> list[dict[str, Any]]:
    return [dict(r) for r in await raw("SELECT action, entity, outcome, subjects FROM audit_event ORDER BY seq")]


async def test_a_person_with_their_notes_is_one_step_with_the_same_events_as_two(db: None) -> None:
    viewer = staff("admin")
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    await gateway.add_note(viewer, purpose=PURPOSE, person_id=erika, body="Ruft morgen zurück")
    before = len(await _events())

    person = await gateway.get_person_with_notes(viewer, purpose=PURPOSE, person_id=erika)
    notes = person.extra["included"]["crm_note"]
    assert person["family_name"] == "Mustermann" and [n["body"] for n in notes] == ["Ruft morgen zurück"]

    pseudonym = await gateway.person_pseudonym(viewer, erika)
    new = (await _events())[before:]
    assert [(e["action"], e["entity"], e["outcome"]) for e in new] == [
        ("read", "crm_person", "ok"), ("read", "crm_note", "ok")]
    assert all(json.loads(e["subjects"]) == [pseudonym] for e in new)


async def test_notes_the_policy_refuses_come_as_the_refusal_and_are_recorded_as_one(db: None) -> None:
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    await gateway.add_note(staff("admin"), purpose=PURPOSE, person_id=erika, body="vertraulich")
    compliance = staff("compliance")
    before = len(await _events())
    person = await gateway.get_person_with_notes(compliance, purpose="compliance_audit", person_id=erika)
    refused = person.extra["included"]["crm_note"]
    assert isinstance(refused, PolicyDenied) and "crm_note" in str(refused)
    new = (await _events())[before:]
    assert [(e["action"], e["entity"], e["outcome"]) for e in new] == [
        ("read", "crm_person", "ok"), ("read", "crm_note", "denied")]
    assert "vertraulich" not in json.dumps(new)


async def test_a_later_step_of_the_request_takes_the_subject_from_its_scope(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    viewer = staff("admin")
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    statements: list[str] = []
    real = reads.raw

    async def counted(sql: str, *args: Any) -> list[dict[str, Any]]:
        statements.append(sql)
        return await real(sql, *args)

    monkeypatch.setattr(reads, "raw", counted)
    await gateway.list_notes(viewer, purpose=PURPOSE, person_id=erika)
    alone = len(statements)
    with request_scope():
        await gateway.get_person(viewer, purpose=PURPOSE, person_id=erika)
        statements.clear()
        await gateway.list_notes(viewer, purpose=PURPOSE, person_id=erika)
    assert len(statements) == alone - 1  # no second lookup of the person


async def test_an_erasure_drops_the_subject_from_the_scope(db: None) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    with request_scope():
        await gateway.get_person(admin, purpose=PURPOSE, person_id=erika)
        await gateway.erase_person(admin, purpose="erasure_request", person_id=erika)
        with pytest.raises(NotFound):
            await gateway.list_notes(admin, purpose=PURPOSE, person_id=erika)
        with pytest.raises(NotFound):
            await gateway.add_note(admin, purpose=PURPOSE, person_id=erika, body="zu spät")
