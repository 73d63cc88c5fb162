"""The audit chain detects tampering, records no values, names what was accessed, and fails closed."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from server import gateway
from server.audit.chain import event_hash, verify_database
from server.db import raw
from server.errors import NotFound
from tests.support import ERIKA, MAX, staff

PURPOSE = "customer_service"
COPY_COLUMNS = (
    '"at", request_id, face, actor_kind, actor_id, "role", "action", entity, subjects, "fields", '
    'purpose, reason, policy_version, outcome, prev_hash, "hash", format_version'
)


async def _events() -> list[dict[str, Any]]:
    return await raw("SELECT * FROM audit_event ORDER BY seq")


async def _count() -> int:
    return len(await _events())


async def _make_events() -> int:
    """Create, read and list through the gateway; returns the number of events written."""
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    await gateway.create_person(admin, purpose=PURPOSE, values=MAX)
    await gateway.get_person(admin, purpose=PURPOSE, person_id=erika)
    await gateway.list_people(admin, purpose=PURPOSE)
    await gateway.get_person(admin, purpose="sales", person_id=erika)
    await gateway.list_people(staff("sales"), purpose="sales")
    total = await _count()
    assert total == 6
    result = await verify_database()
    assert result.ok, result.problem
    assert result.checked == total
    return total


async def _id_of(seq: int) -> int:
    rows = await raw("SELECT id FROM audit_event WHERE seq = {}", seq)
    return int(rows[0]["id"])


async def _spare_id() -> int:
    rows = await raw("SELECT MAX(id) AS top FROM audit_event")
    return int(rows[0]["top"]) + 1000


async def test_an_untouched_chain_verifies(db: None) -> None:
    total = await _make_events()
    result = await verify_database()
    assert result.ok and result.first_bad_seq is None
    assert [e["seq"] for e in await _events()] == list(range(1, total + 1))


async def test_a_modified_purpose_is_detected_at_that_event(db: None) -> None:
    await _make_events()
    await raw("UPDATE audit_event SET purpose = {} WHERE seq = {}", "marketing", 3)
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "modified" in result.problem


async def test_a_deleted_middle_event_is_detected_at_the_event_after_the_gap(db: None) -> None:
    await _make_events()
    await raw("DELETE FROM audit_event WHERE seq = {}", 3)
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.checked == 2


async def test_a_forged_event_appended_at_the_end_is_detected(db: None) -> None:
    total = await _make_events()
    await raw(
        f"INSERT INTO audit_event (seq, {COPY_COLUMNS}) SELECT {{}}, {COPY_COLUMNS} "
        "FROM audit_event WHERE seq = {}",
        total + 1, 2,
    )
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == total + 1


async def test_a_forged_event_slipped_between_two_events_is_detected_where_it_sits(db: None) -> None:
    total = await _make_events()
    shift = await _spare_id()
    gap_after = await _id_of(3)
    # Make room after event 3 in storage order, then slip a copy of event 2 into it.
    await raw("UPDATE audit_event SET id = id + {} WHERE seq > {}", shift, 3)
    await raw(
        f"INSERT INTO audit_event (id, seq, {COPY_COLUMNS}) SELECT {{}}, {{}}, {COPY_COLUMNS} "
        "FROM audit_event WHERE seq = {}",
        gap_after + 1, total + 1, 2,
    )
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == total + 1
    assert result.checked == 3


async def test_a_correctly_hashed_event_slipped_between_two_events_breaks_the_next_link(
    db: None,
) -> None:
    """A forger who knows the hash function renumbers the tail; the next real event still breaks."""
    total = await _make_events()
    shift = await _spare_id()
    gap_after = await _id_of(3)
    third = (await raw("SELECT * FROM audit_event WHERE seq = {}", 3))[0]
    await raw("UPDATE audit_event SET id = id + {}, seq = seq + {} WHERE seq > {}", shift, shift, 3)
    await raw("UPDATE audit_event SET seq = seq - {} + 1 WHERE seq > {}", shift, shift)
    forged = {**third, "seq": 4, "purpose": "forged", "prev_hash": third["hash"]}
    log_id = (await raw("SELECT log_id FROM audit_head"))[0]["log_id"]
    forged["hash"] = event_hash(third["hash"], forged, log_id)
    await raw(
        f"INSERT INTO audit_event (id, seq, {COPY_COLUMNS}) SELECT {{}}, {{}}, "
        '"at", request_id, face, actor_kind, actor_id, "role", "action", entity, subjects, '
        '"fields", {}, reason, policy_version, outcome, {}, {}, format_version FROM audit_event WHERE seq = {}',
        gap_after + 1, 4, "forged", forged["prev_hash"], forged["hash"], 3,
    )
    assert [e["seq"] for e in await _events()] == list(range(1, total + 2))
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == 5
    assert result.checked == 4


async def test_two_events_swapped_in_storage_order_are_detected(db: None) -> None:
    await _make_events()
    a, b, spare = await _id_of(3), await _id_of(4), await _spare_id()
    await raw("UPDATE audit_event SET id = {} WHERE id = {}", spare, a)
    await raw("UPDATE audit_event SET id = {} WHERE id = {}", a, b)
    await raw("UPDATE audit_event SET id = {} WHERE id = {}", b, spare)
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.checked == 2


async def test_a_deleted_last_event_is_detected_through_the_head(db: None) -> None:
    total = await _make_events()
    await raw("DELETE FROM audit_event WHERE seq = {}", total)
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == total
    assert result.checked == total - 1
    assert "head" in result.problem


async def test_an_altered_chain_head_is_detected(db: None) -> None:
    total = await _make_events()
    await raw("UPDATE audit_head SET hash = {} WHERE name = 'main'", "f" * 64)
    result = await verify_database()
    assert not result.ok
    assert result.checked == total
    assert result.first_bad_seq == total + 1
    assert "head" in result.problem


async def test_a_head_pointing_before_the_end_is_detected(db: None) -> None:
    total = await _make_events()
    previous = (await raw("SELECT prev_hash FROM audit_event WHERE seq = {}", total))[0]["prev_hash"]
    await raw("UPDATE audit_head SET seq = {}, hash = {} WHERE name = 'main'", total - 1, previous)
    result = await verify_database()
    assert not result.ok
    assert "head" in result.problem


async def test_audit_events_never_hold_field_values(db: None) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    await gateway.get_person(admin, purpose=PURPOSE, person_id=erika)
    await gateway.update_person(admin, purpose=PURPOSE, person_id=erika,
                                changes={"phone": "+49 221 9876543", "family_name": "Musterfrau"})
    await gateway.find_people(admin, purpose=PURPOSE, field="email", query=ERIKA["email"])
    await gateway.reveal_field(admin, purpose=PURPOSE, person_id=erika, field="birth_date",
                               reason="identity_check", note="on the phone")
    events = await _events()
    assert {e["action"] for e in events} >= {"create", "read", "update", "search", "reveal"}
    dumped = " ".join(str(v) for e in events for v in e.values())
    for value in [*ERIKA.values(), "+49 221 9876543", "Musterfrau", "Mustermann", "Erika"]:
        assert value not in dumped, value


async def test_a_read_writes_one_event_naming_the_fields_and_decisions(db: None) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    before = await _count()
    await gateway.get_person(admin, purpose=PURPOSE, person_id=erika)
    events = await _events()
    assert len(events) == before + 1
    event = events[-1]
    assert (event["action"], event["entity"], event["purpose"], event["outcome"]) == (
        "read", "crm_person", PURPOSE, "ok")
    fields = json.loads(event["fields"])
    assert set(fields) == set(gateway.PERSON_FIELDS)
    assert fields["birth_date"] == "mask by admin-read-write-all"
    assert fields["email"] == "allow by admin-read-write-all"
    pseudonym = await gateway.person_pseudonym(admin, erika)
    assert json.loads(event["subjects"]) == [pseudonym]
    assert event["actor_id"] == admin.id and event["role"] == "admin"


async def test_a_list_writes_one_event_naming_every_subject_on_the_page(db: None) -> None:
    admin = staff("admin")
    ids = [await gateway.create_person(admin, purpose=PURPOSE, values=v) for v in (ERIKA, MAX)]
    pseudonyms = {await gateway.person_pseudonym(admin, pid) for pid in ids}
    before = await _count()
    page = await gateway.list_people(admin, purpose=PURPOSE)
    assert {r.id for r in page.items} == set(ids)
    events = await _events()
    assert len(events) == before + 1
    event = events[-1]
    assert event["action"] == "list"
    assert set(json.loads(event["subjects"])) == pseudonyms
    rows = await raw("SELECT pseudonym FROM audit_subject WHERE seq = {}", event["seq"])
    assert {str(r["pseudonym"]) for r in rows} == pseudonyms


async def test_a_read_whose_audit_event_cannot_be_written_returns_no_data(
    db: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    before = await _count()

    async def broken(events: object, policy_version: str) -> None:
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr("server.gateway.audit.record_events", broken)
    result: Any = None
    with pytest.raises(RuntimeError, match="audit store unavailable"):
        result = await gateway.get_person(admin, purpose=PURPOSE, person_id=erika)
    assert result is None
    with pytest.raises(RuntimeError):
        await gateway.list_people(admin, purpose=PURPOSE)
    assert await _count() == before


async def test_a_create_whose_audit_event_cannot_be_written_leaves_nothing_behind(
    db: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(events: object, policy_version: str) -> None:
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr("server.gateway.audit.record_events", broken)
    with pytest.raises(RuntimeError):
        await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    assert await raw("SELECT id FROM crm_person") == []
    assert await raw("SELECT subject_id FROM vault_subject_key") == []
    assert await _count() == 0


async def test_a_read_of_an_unknown_person_writes_no_event(db: None) -> None:
    with pytest.raises(NotFound):
        await gateway.get_person(staff("admin"), purpose=PURPOSE, person_id=uuid.uuid4())
    assert await _count() == 0
