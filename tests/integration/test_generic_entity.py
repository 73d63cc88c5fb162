"""A new table with personal data takes a declaration in fields.yml, a description and a small service:
no gateway module. Shown with a test-only appointment table on both databases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from piccolo.columns import UUID, Text, Timestamptz
from piccolo.table import Table

import server.gateway
from server import gateway, kernel
from server.actor import Actor
from server.audit.chain import verify_database
from server.db import raw
from server.errors import PolicyDenied
from server.gateway import reads, subjects, writes
from server.gateway.records import Record
from server.policy import load_policies
from server.settings import REPO_ROOT
from tests.support import ERIKA, MAX, customer, staff

FIELDS = """
  test_appointment:
    topic:       {category: appointment.topic, sensitivity: normal, encrypted: true, searchable: false, retention: customer-record}
    location:    {category: appointment.location, sensitivity: high, encrypted: true, searchable: false, retention: customer-record}
    person:      {category: identifier.subject, sensitivity: low, encrypted: false, searchable: false, retention: customer-record, subject: crm_person}
    id:          {category: technical.id, sensitivity: low, encrypted: false, searchable: false, personal: false}
    created_at:  {category: technical.timestamp, sensitivity: low, encrypted: false, searchable: false, personal: false}
"""  # noqa: E501
ACCESS = """
  - id: support-read-write-appointments
    description: Support book and read appointments for the people they serve.
    roles: [support]
    actions: [read, write]
    purposes: [customer_service]
    tables: [test_appointment]
    fields: ["*"]
    effect: allow
    scope: all
    priority: 10

  - id: customer-read-own-appointments
    description: Customers see their own appointments.
    roles: [customer]
    actions: [read, export]
    purposes: [self_service]
    tables: [test_appointment]
    fields: ["*"]
    effect: allow
    scope: self
    priority: 10
"""


class AppointmentTable(Table, tablename="test_appointment"):
    id = UUID(primary_key=True)
    person = UUID()
    topic = Text(null=True)
    location = Text(null=True)
    created_at = Timestamptz()


# The whole service of the new entity: a description and the calls it makes.
APPOINTMENTS = gateway.describe("test_appointment", fields=("topic", "location"),
                                missing="No such appointment; it may have been cancelled or erased.")


async def book(actor: Actor, person_id: uuid.UUID, topic: str, location: str) -> uuid.UUID:
    rows = [{"topic": topic, "location": location}]
    return (await writes.create(APPOINTMENTS, actor, purpose="customer_service", rows=rows, subject=person_id))[0]


async def appointments_of(actor: Actor, person_id: uuid.UUID, purpose: str = "customer_service") -> list[Record]:
    return await reads.of_subject(APPOINTMENTS, actor, purpose=purpose, subject_id=person_id)


async def appointment(actor: Actor, appointment_id: uuid.UUID) -> Record:
    return await reads.get(APPOINTMENTS, actor, purpose="customer_service", row_id=appointment_id)


@pytest.fixture
async def appointments(db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    (policies / "fields.yml").write_text((policies / "fields.yml").read_text() + FIELDS)
    (policies / "access.yml").write_text((policies / "access.yml").read_text() + ACCESS)
    loaded = kernel.Kernel(policies=load_policies(policies), keys=kernel.get_kernel().keys)
    for name, module in sorted(sys.modules.items()):
        if name.startswith("server.gateway") and hasattr(module, "get_kernel"):
            monkeypatch.setattr(module, "get_kernel", lambda: loaded)
    await AppointmentTable.create_table(if_not_exists=True)
    try:
        yield
    finally:
        await AppointmentTable.alter().drop_table(if_exists=True)


async def _events(entity: str) -> list[Mapping[str, object]]:
    rows = await raw("SELECT action, outcome, subjects, fields FROM audit_event WHERE entity = {} ORDER BY seq", entity)
    return [dict(r) for r in rows]


async def test_a_declared_table_is_sealed_under_the_persons_key_and_read_per_role(appointments: None) -> None:
    admin, support, sales = staff("admin"), staff("support"), staff("sales")
    erika = await gateway.create_person(admin, purpose="customer_service", values=ERIKA)
    booked = await book(support, erika, "Beratung Hausrat", "Heidestraße 17, Köln")

    stored = [dict(r) for r in await raw("SELECT topic, location FROM test_appointment")]
    assert "Beratung" not in json.dumps(stored, default=str) and "Heide" not in json.dumps(stored, default=str)

    shown = await appointment(support, booked)
    assert shown["topic"] == "Beratung Hausrat"
    assert shown.is_masked("location") and "Heide" not in (shown["location"] or "")  # sensitivity: high
    assert [r.id for r in await appointments_of(support, erika)] == [booked]

    with pytest.raises(PolicyDenied, match="test_appointment"):
        await appointment(sales, booked)
    with pytest.raises(PolicyDenied):
        await book(sales, erika, "Verkauf", "Büro")

    # The person sees their own appointment in full; another customer sees nothing of it.
    own = await appointments_of(customer(erika), erika, purpose="self_service")
    assert own[0]["location"] == "Heidestraße 17, Köln"
    max_ = await gateway.create_person(admin, purpose="customer_service", values=MAX)
    with pytest.raises(PolicyDenied):
        await appointments_of(customer(max_), erika, purpose="self_service")

    pseudonym = await gateway.person_pseudonym(admin, erika)
    events = await _events("test_appointment")
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("create", "ok"), ("read", "ok"), ("read", "ok"), ("read", "denied"), ("create", "denied"),
        ("read", "ok"), ("read", "denied")]
    assert all(json.loads(str(e["subjects"])) == [pseudonym] for e in events)
    assert "Beratung" not in json.dumps(events) and "Erika" not in json.dumps(events)


async def test_erasing_the_person_shreds_their_appointments_and_the_chain_still_verifies(
        appointments: None) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose="customer_service", values=ERIKA)
    max_ = await gateway.create_person(admin, purpose="customer_service", values=MAX)
    await book(staff("support"), erika, "Beratung", "Köln")
    kept = await book(staff("support"), max_, "Termin", "Berlin")

    assert "test_appointment" in [t for t, _ in server.gateway.spec.cascade("crm_person")]
    await gateway.erase_person(admin, purpose="erasure_request", person_id=erika)
    assert [r["id"] for r in await raw("SELECT id FROM test_appointment")] == [kept]
    assert (await verify_database()).ok


async def test_the_subjects_export_includes_every_described_table_they_may_export(appointments: None) -> None:
    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    booked = await book(staff("support"), erika, "Beratung", "Köln")
    exported = await subjects.export(customer(erika), purpose="self_service", subject_id=erika)
    assert [r.id for r in exported["test_appointment"]] == [booked]
    assert exported["test_appointment"][0]["topic"] == "Beratung"
    assert exported["crm_person"][0]["email"] == ERIKA["email"]
    assert "crm_note" not in exported  # policy gives customers no export of notes (none are read)
    actions = await raw("SELECT entity FROM audit_event WHERE action = 'export' ORDER BY seq")
    assert sorted(a["entity"] for a in actions) == ["crm_person", "test_appointment"]


def test_the_gateway_has_no_code_for_the_new_table() -> None:
    found = subprocess.run(["grep", "-ril", "appointment", str(REPO_ROOT / "server" / "gateway")],
                           capture_output=True, text=True)
    assert found.stdout == "", found.stdout


def test_every_linked_table_with_encrypted_fields_is_served_or_erased_elsewhere() -> None:
    assert server.gateway.spec.unserved("crm_person") == []
