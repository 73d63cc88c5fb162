"""Erasure is crypto-shredding: the data key and every record go, the ledger remembers, copies stay dark."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from server import gateway
from server.crm import service as people
from server.db import flush_deleted_pages, is_sqlite, raw
from server.errors import NotFound, PolicyDenied
from server.identity.service import create_customer_account
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.cipher import DecryptionFailed, WrappedKey, decrypt_field, unwrap_data_key
from server.vault.ledger import read_ledger
from tests.support import ERIKA, MAX, staff


async def _erika_with_note_and_account() -> uuid.UUID:
    pid = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    await gateway.add_note(staff("admin"), purpose="customer_service", person_id=pid, body="canary note")
    await create_customer_account(pid, ERIKA["email"], "erika-portal-demo")
    return pid


async def test_erasing_removes_key_person_notes_and_account_and_is_recorded(db: None) -> None:
    pid = await _erika_with_note_and_account()
    max_id = await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    await people.erase_person(staff("admin"), pid)
    for table, column in [("vault_subject_key", "subject_id"), ("crm_person", "id"), ("crm_note", "person"),
                          ("identity_customer_account", "person_id")]:
        assert await raw(f"SELECT 1 FROM {table} WHERE {column} = {{}}", pid) == [], table
    assert read_ledger(get_settings().erasure_ledger).erased(get_kernel().keys, [pid]) == [pid]
    with pytest.raises(NotFound):
        await gateway.get_person(staff("admin"), purpose="customer_service", person_id=pid)
    still = await gateway.get_person(staff("admin"), purpose="customer_service", person_id=max_id)
    assert still["family_name"] == "Mustermann"
    events = await raw("SELECT action, outcome, subjects FROM audit_event WHERE action = 'erase'")
    assert len(events) == 1 and events[0]["outcome"] == "ok"


async def test_a_copy_of_the_ciphertext_taken_before_erasure_no_longer_decrypts(db: None) -> None:
    pid = await _erika_with_note_and_account()
    row = (await raw("SELECT email FROM crm_person WHERE id = {}", pid))[0]
    key = (await raw("SELECT key_id, kek_id, wrapped FROM vault_subject_key WHERE subject_id = {}", pid))[0]
    provider = get_kernel().keys
    dk = unwrap_data_key(provider, pid, WrappedKey(key["key_id"], key["kek_id"], key["wrapped"]))
    assert decrypt_field(dk, "crm_person", "email", pid, row["email"]) == ERIKA["email"]
    await people.erase_person(staff("admin"), pid)
    # the only way to the data key was the wrapped key row, and it is gone
    assert await raw("SELECT 1 FROM vault_subject_key WHERE subject_id = {}", pid) == []
    other = await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    other_key = (await raw("SELECT key_id, kek_id, wrapped FROM vault_subject_key WHERE subject_id = {}", other))[0]
    other_dk = unwrap_data_key(provider, other, WrappedKey(other_key["key_id"], other_key["kek_id"],
                                                           other_key["wrapped"]))
    with pytest.raises(DecryptionFailed):
        decrypt_field(other_dk, "crm_person", "email", pid, row["email"])


async def test_the_database_file_no_longer_holds_the_erased_key_or_tokens(db: None) -> None:
    if not is_sqlite():
        pytest.skip("inspects the SQLite file; PostgreSQL frees dead rows at VACUUM")
    pid = await _erika_with_note_and_account()
    wrapped = (await raw("SELECT wrapped FROM vault_subject_key WHERE subject_id = {}", pid))[0]["wrapped"]
    email_token = (await raw("SELECT email FROM crm_person WHERE id = {}", pid))[0]["email"]
    await flush_deleted_pages()
    path = get_settings().sqlite_path
    before = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert wrapped.encode() in before and email_token.encode() in before
    await people.erase_person(staff("admin"), pid)
    after = b"".join(p.read_bytes() for p in Path(path.parent).glob(path.name + "*"))
    assert wrapped.encode() not in after
    assert email_token.encode() not in after


async def test_only_a_role_with_the_erase_rule_may_erase_and_a_refusal_changes_nothing(db: None) -> None:
    pid = await _erika_with_note_and_account()
    with pytest.raises(PolicyDenied):
        await people.erase_person(staff("sales"), pid)
    assert await raw("SELECT 1 FROM vault_subject_key WHERE subject_id = {}", pid) != []
    assert read_ledger(get_settings().erasure_ledger).erased(get_kernel().keys, [pid]) == []
    denied = await raw("SELECT outcome FROM audit_event WHERE action = 'erase'")
    assert [d["outcome"] for d in denied] == ["denied"]


async def test_after_an_erasure_the_audit_chain_still_verifies_and_no_event_leads_back_to_her(db: None) -> None:
    from server.audit.chain import verify_database

    pid = await _erika_with_note_and_account()
    await gateway.get_person(staff("admin"), purpose="customer_service", person_id=pid)
    pseudonym = (await raw("SELECT pseudonym FROM crm_person WHERE id = {}", pid))[0]["pseudonym"]
    await people.erase_person(staff("admin"), pid)
    result = await verify_database()
    assert result.ok and result.checked >= 4
    # the events keep her pseudonym, but nothing in the database links it to a person any more
    assert await raw("SELECT 1 FROM audit_subject WHERE pseudonym = {}", pseudonym) != []
    assert await raw("SELECT 1 FROM crm_person WHERE pseudonym = {}", pseudonym) == []
