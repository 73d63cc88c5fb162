"""Tokens are bound to their row, column and subject, and the database holds neither keys nor clear text."""

from __future__ import annotations

import base64
import uuid

import pytest

from server import gateway
from server.db import is_sqlite, raw
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.cipher import DecryptionFailed
from server.vault.store import load_data_keys
from tests.support import ERIKA, MAX, staff

PURPOSE = "customer_service"
# Every field filled, so that a read fails only because of the tampering under test.
MAX_FULL = {**MAX, "address": "Musterweg 3, 80331 München"}


async def _token(person_id: uuid.UUID, column: str) -> str:
    rows = await raw(f"SELECT {column} FROM crm_person WHERE id = {{}}", person_id)
    return str(rows[0][column])


async def test_an_email_token_copied_to_another_person_does_not_decrypt(db: None) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    max_ = await gateway.create_person(admin, purpose=PURPOSE, values=MAX_FULL)
    before = await gateway.get_person(admin, purpose=PURPOSE, person_id=max_)
    assert before["email"] == MAX["email"]

    await raw("UPDATE crm_person SET email = {} WHERE id = {}", await _token(erika, "email"), max_)

    with pytest.raises(DecryptionFailed):
        await gateway.get_person(admin, purpose=PURPOSE, person_id=max_)


async def test_a_phone_token_copied_into_the_email_column_of_the_same_person_does_not_decrypt(
    db: None,
) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    before = await gateway.get_person(admin, purpose=PURPOSE, person_id=erika)
    assert before["email"] == ERIKA["email"]

    await raw("UPDATE crm_person SET email = {} WHERE id = {}", await _token(erika, "phone"), erika)

    with pytest.raises(DecryptionFailed):
        await gateway.get_person(admin, purpose=PURPOSE, person_id=erika)


async def test_a_field_left_out_at_creation_is_stored_as_no_token_and_reads_back_empty(
    db: None,
) -> None:
    admin = staff("admin")
    max_ = await gateway.create_person(admin, purpose=PURPOSE, values=MAX)
    rows = await raw("SELECT address FROM crm_person WHERE id = {}", max_)
    assert rows[0]["address"] is None
    record = await gateway.get_person(admin, purpose=PURPOSE, person_id=max_)
    assert record["address"] is None
    assert record["family_name"] == MAX["family_name"]


async def test_the_stored_data_key_is_only_ever_wrapped(db: None) -> None:
    erika = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=ERIKA)
    keys = await load_data_keys(get_kernel().keys, [erika])
    raw_key = keys[erika].key
    rows = await raw("SELECT wrapped FROM vault_subject_key WHERE subject_id = {}", erika)
    assert len(rows) == 1
    wrapped = str(rows[0]["wrapped"])
    decoded = base64.urlsafe_b64decode(wrapped + "=" * (-len(wrapped) % 4))
    assert raw_key not in decoded
    for encoding in (base64.urlsafe_b64encode, base64.b64encode):
        assert encoding(raw_key).decode().rstrip("=") not in wrapped
    assert raw_key.hex() not in wrapped


async def test_the_sqlite_file_holds_no_names_or_addresses_in_clear_text(db: None) -> None:
    if not is_sqlite():
        pytest.skip("only a SQLite database is a single file to read")
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    await gateway.create_person(admin, purpose=PURPOSE, values=MAX)
    await gateway.add_note(admin, purpose=PURPOSE, person_id=erika,
                           body="Called Frau Mustermann about her contract.")
    email_token = await _token(erika, "email")

    path = get_settings().sqlite_path
    content = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        content += wal.read_bytes()

    assert email_token.encode() in content, "the file read is not the one the data was written to"
    for secret in ("Mustermann", "erika.mustermann@example.org"):
        assert secret.encode() not in content
        assert secret.encode("utf-16-le") not in content


async def test_within_one_request_a_data_key_is_unwrapped_once(db: None, monkeypatch) -> None:
    from server.vault import store

    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    calls: list[object] = []
    real = store.unwrap_data_key

    def counting(*args: object) -> object:
        calls.append(args[1])
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "unwrap_data_key", counting)
    with store.request_key_cache():
        await gateway.get_person(staff("admin"), purpose="customer_service", person_id=erika)
        await gateway.list_notes(staff("admin"), purpose="customer_service", person_id=erika)
    assert calls == [erika]
    await gateway.get_person(staff("admin"), purpose="customer_service", person_id=erika)
    assert calls == [erika, erika]  # outside a request nothing is kept
