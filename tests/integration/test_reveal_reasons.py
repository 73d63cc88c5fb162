"""A reveal records a reason code and a ticket reference; what staff type as a note is sealed under the
person's data key, so it never sits in clear text in the hash-chained event and goes with the person."""

from __future__ import annotations

import uuid

import pytest

from server import gateway
from server.audit.chain import verify_database
from server.crm import service as people
from server.db import flush_deleted_pages, is_sqlite, raw
from server.errors import Invalid
from server.gateway import reasons
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.cipher import DecryptionFailed, decrypt_field
from server.vault.store import load_data_keys
from tests.support import ERIKA, MAX, customer, staff

PURPOSE = "customer_service"
NOTE = "Erika Mustermann rang from Heidestraße about her overdue invoice"
NEEDLES = ("Mustermann", "Heidestra", "overdue invoice")


async def _every_stored_value() -> str:
    """Every value of every row of every table, as text."""
    if is_sqlite():
        tables = [r["name"] for r in await raw("SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        tables = [r["tablename"] for r in await raw("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    out = []
    for table in tables:
        out.extend(" ".join(str(v) for v in row.values()) for row in await raw(f'SELECT * FROM "{table}"'))
    return "\n".join(out)


async def _reveal_with_note(person_id: uuid.UUID, note: str = NOTE) -> str:
    await gateway.reveal_field(staff("admin"), purpose=PURPOSE, person_id=person_id, field="birth_date",
                               reason="support_case", ticket="T-4711", note=note)
    rows = await raw("SELECT reason FROM audit_event WHERE action = 'reveal' ORDER BY seq DESC")
    return str(rows[0]["reason"])


async def test_a_name_typed_into_a_reveal_note_leaves_no_clear_text_in_any_table_or_the_database_file(
        db: None) -> None:
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    recorded = await _reveal_with_note(erika)
    assert recorded.startswith("support_case ticket=T-4711 note=")
    stored = await _every_stored_value()
    for needle in NEEDLES:
        assert needle not in stored, f"{needle!r} is stored in clear text"
    if is_sqlite():
        await flush_deleted_pages()
        path = get_settings().sqlite_path
        data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        for needle in NEEDLES:
            assert needle.encode() not in data, f"the database file holds {needle!r}"
    shown = await gateway.explain_reasons(customer(erika), person_id=erika, recorded=[recorded])
    assert shown[recorded].note == NOTE, "Erika herself reads the note in her access log"
    assert (shown[recorded].title, shown[recorded].ticket) == ("Working on a support case", "T-4711")


async def test_the_note_is_opened_only_for_the_person_themself_not_for_staff_or_another_customer(
        db: None) -> None:
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    max_ = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=MAX)
    recorded = await _reveal_with_note(erika)
    for reader in (staff("compliance"), customer(max_)):
        shown = await gateway.explain_reasons(reader, person_id=erika, recorded=[recorded])
        assert shown[recorded].note is None and shown[recorded].has_note
        assert shown[recorded].title == "Working on a support case"


async def test_after_erasure_the_chain_verifies_and_the_reveal_note_cannot_be_decrypted(db: None) -> None:
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    max_ = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=MAX)
    recorded = await _reveal_with_note(erika)
    token = reasons.parse(recorded, gateway.reveal_reasons())
    assert token is not None and token.note_token
    await people.erase_person(staff("admin"), erika)
    assert (await verify_database()).ok, "erasure must not break the chain"
    kept = await raw("SELECT reason FROM audit_event WHERE action = 'reveal'")
    assert [r["reason"] for r in kept] == [recorded], "the event is kept exactly as hashed"
    assert await load_data_keys(get_kernel().keys, [erika]) == {}, "her data key is shredded"
    for other in (await load_data_keys(get_kernel().keys, [max_])).values():
        with pytest.raises(DecryptionFailed):
            decrypt_field(other, reasons.NOTE_TABLE, reasons.NOTE_COLUMN, erika, token.note_token)
    shown = await gateway.explain_reasons(customer(erika), person_id=erika, recorded=[recorded])
    assert shown[recorded].note is None and shown[recorded].has_note
    assert NEEDLES[0] not in await _every_stored_value()


@pytest.mark.parametrize("ticket", ["T 4711", "Erika Mustermann", "Mustermann", "ä-4711", "T-4711;drop",
                                    "T-" + "1" * 39, "ticket=T-1"])
async def test_a_ticket_reference_beyond_the_plain_charset_is_rejected_with_a_clear_error(
        db: None, ticket: str) -> None:
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    before = await raw("SELECT seq FROM audit_head")
    with pytest.raises(Invalid) as caught:
        await gateway.reveal_field(staff("admin"), purpose=PURPOSE, person_id=erika, field="birth_date",
                                   reason="support_case", ticket=ticket)
    assert "up to 40 letters, digits and . _ # / - with at least one digit" in caught.value.errors["ticket"]
    assert await raw("SELECT seq FROM audit_head") == before, "a refused reveal records nothing"


async def test_a_free_text_reason_is_refused_naming_the_reasons_to_choose_from(db: None) -> None:
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    with pytest.raises(Invalid) as caught:
        await gateway.reveal_field(staff("admin"), purpose=PURPOSE, person_id=erika, field="birth_date",
                                   reason="Erika Mustermann called")
    message = caught.value.errors["reason"]
    assert message.startswith("unknown reason 'Erika Mustermann called'; choose one of: customer_request")
    with pytest.raises(Invalid) as long_note:
        await gateway.reveal_field(staff("admin"), purpose=PURPOSE, person_id=erika, field="birth_date",
                                   reason="support_case", note="x" * 201)
    assert long_note.value.errors["note"] == "is 201 characters long; keep the note under 200"
    assert await raw("SELECT id FROM audit_event WHERE action = 'reveal'") == []


def test_a_recorded_reason_is_read_back_and_other_text_is_not_taken_for_one() -> None:
    known = {"support_case": "Working on a support case"}
    assert reasons.parse("support_case ticket=T-1", known) == reasons.Reason("support_case", "T-1")
    assert reasons.parse("support_case", known) == reasons.Reason("support_case")
    for other in ("", "Verifying identity on the phone", "support_case by phone", "support_case ticket=",
                  "support_case ticket=1 ticket=2", "restored from backup.tar"):
        assert reasons.parse(other, known) is None, other



def test_the_compliance_console_shows_a_reason_in_words_never_the_note_ciphertext() -> None:
    known = {"support_case": "Working on a support case"}
    shown = reasons.describe("support_case ticket=T-1 note=v1.abcdef", known)
    assert shown == "Working on a support case · ticket T-1 · note sealed for the person"
    assert "abcdef" not in shown
    assert reasons.describe("restored from backup.tar", known) == "restored from backup.tar"
