"""An erasure closes the crypto-period: a backup taken before it no longer opens the erased person with
anything the operator still holds, while everyone else in that backup restores."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import gateway
from server.backup import WITHOUT_LEDGER_FLAG, BackupError, backup, restore
from server.crm import service as people
from server.db import is_sqlite, raw
from server.errors import NotFound
from server.identity.service import create_customer_account
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.cipher import DecryptionFailed, WrappedKey, decrypt_field, unwrap_data_key
from server.vault.keys import FileKeyProvider, KeyError_, read_key_document
from server.vault.ledger import read_ledger, subject_hash
from tests.support import ERIKA, MAX, staff


@pytest.fixture
def ledger() -> Iterator[Path]:
    path = get_settings().erasure_ledger
    before = path.read_bytes() if path.exists() else None
    yield path
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


def _backup_rows(backup_file: Path, table: str) -> list[dict[str, str]]:
    """The rows of `table` as anyone holding the backup file reads them, without Mutual."""
    if is_sqlite():
        with sqlite3.connect(f"{backup_file.resolve().as_uri()}?mode=ro&immutable=1", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            return [{k: str(r[k]) for k in r.keys()} for r in conn.execute(f"SELECT * FROM {table}")]
    sql = subprocess.run(["pg_restore", "--data-only", f"--table={table}", "--file=-", str(backup_file)],
                         check=True, capture_output=True, text=True).stdout
    lines = iter(sql.splitlines())
    for line in lines:
        if line.startswith(f"COPY public.{table} ("):
            columns = [c.strip() for c in line.split("(", 1)[1].split(")", 1)[0].split(",")]
            break
    else:
        return []
    rows = []
    for line in lines:
        if line == "\\.":
            break
        rows.append(dict(zip(columns, line.split("\t"), strict=True)))
    return rows


def _every_key_in(doc: dict) -> list[bytes]:
    """Every key the document holds, of whatever purpose: an attacker tries them all as KEKs."""
    provider = FileKeyProvider.from_document(doc, "copy")
    found = list(provider.keks.values())
    for versions in provider.index_versions.values():
        found += [key for _, key in versions]
    if provider.ledger_root is not None:
        found.append(provider.ledger_root[1])
    return found


def _opens(keys: list[bytes], sid: uuid.UUID, key_row: dict[str, str], person: dict[str, str]) -> bool:
    for kek in keys:
        provider = FileKeyProvider(keks={key_row["kek_id"]: kek}, active=key_row["kek_id"], index_keys={})
        try:
            dk = unwrap_data_key(provider, sid, WrappedKey(key_row["key_id"], key_row["kek_id"], key_row["wrapped"]))
            decrypt_field(dk, "crm_person", "email", sid, person["email"])
        except (DecryptionFailed, KeyError_):
            continue
        return True
    return False


def _store_entries(text: str) -> dict[str, list[str]]:
    return json.loads(text)["keys"] if text else {}


async def test_a_backup_taken_before_an_erasure_opens_the_others_but_not_her_with_all_the_operator_keeps(
        db: None, ledger: Path, tmp_path: Path) -> None:
    settings = get_settings()
    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    await gateway.add_note(staff("admin"), purpose="customer_service", person_id=erika, body="canary note")
    await create_customer_account(erika, ERIKA["email"], "erika-portal-demo")
    max_id = await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    taken = await backup(tmp_path)
    key_file_then = settings.key_file.read_text()
    store_then = settings.subject_key_store.read_text() if settings.subject_key_store.exists() else ""

    await people.erase_person(staff("admin"), erika)

    keys = {r["subject_id"]: r for r in _backup_rows(taken, "vault_subject_key")}
    persons = {r["id"]: r for r in _backup_rows(taken, "crm_person")}
    her_key, her_row = keys[str(erika)], persons[str(erika)]
    # The procedure works: the key file as it was when the backup was taken opens her.
    assert _opens(_every_key_in(json.loads(key_file_then)), erika, her_key, her_row)
    # Everything the operator holds now: the key file, the subject-key store (now and as it was
    # before), the erasure ledger, the backup. None of it opens her.
    doc = read_key_document(settings.key_file)
    assert her_key["kek_id"] in doc["kek"]["destroyed"] and her_key["kek_id"] not in doc["kek"]["keys"]
    held = _every_key_in(doc)
    assert not _opens(held, erika, her_key, her_row)
    store_now = settings.subject_key_store.read_text()
    assert str(erika) not in store_now
    for stored in (_store_entries(store_now), _store_entries(store_then)):
        if str(erika) in stored:
            key_id, wrapped = stored[str(erika)]
            entry = {"key_id": key_id, "kek_id": json.loads(store_then)["kek"], "wrapped": wrapped}
            assert not _opens(held, erika, entry, her_row)
    assert str(erika).encode() not in ledger.read_bytes() and erika.hex.encode() not in ledger.read_bytes()

    result = await restore(taken)
    assert result.rekeyed >= 1
    with pytest.raises(NotFound):
        await gateway.get_person(staff("admin"), purpose="customer_service", person_id=erika)
    back = await gateway.get_person(staff("admin"), purpose="customer_service", person_id=max_id)
    assert (back["given_name"], back["email"]) == ("Max", MAX["email"])


async def test_even_with_the_ledger_lost_a_person_erased_after_the_backup_comes_back_unreadable_and_is_removed(
        db: None, ledger: Path, tmp_path: Path) -> None:
    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    max_id = await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    taken = await backup(tmp_path)
    await people.erase_person(staff("admin"), erika)
    ledger.unlink()
    result = await restore(taken, without_ledger=True)
    assert (result.replayed, result.unreadable, result.ledger_found) == (0, 1, False)
    assert await raw("SELECT 1 FROM crm_person WHERE id = {}", erika) == []
    back = await gateway.get_person(staff("admin"), purpose="customer_service", person_id=max_id)
    assert back["email"] == MAX["email"]


async def test_a_restore_without_the_erasure_ledger_is_refused_naming_the_ledger_and_the_flag(
        db: None, ledger: Path, tmp_path: Path) -> None:
    taken = await backup(tmp_path)
    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    ledger.unlink()
    with pytest.raises(BackupError) as refused:
        await restore(taken)
    assert str(ledger) in str(refused.value) and WITHOUT_LEDGER_FLAG in str(refused.value)
    assert await raw("SELECT 1 FROM crm_person WHERE id = {}", erika) != []  # nothing was changed


async def test_a_backup_creates_an_empty_ledger_so_a_fresh_installation_can_restore(
        db: None, ledger: Path, tmp_path: Path) -> None:
    ledger.unlink(missing_ok=True)
    taken = await backup(tmp_path)
    assert ledger.exists() and ledger.read_bytes() == b""
    assert (await restore(taken)).ledger_found


async def test_the_ledger_holds_keyed_hashes_not_subject_ids_and_replays_when_the_period_did_not_close(
        db: None, ledger: Path, tmp_path: Path) -> None:
    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    taken = await backup(tmp_path)
    # The gateway's erasure without its after-commit step: as if closing the period had failed.
    await gateway.erase_person(staff("admin"), purpose="erasure_request", person_id=erika)
    text = ledger.read_text()
    assert str(erika) not in text and erika.hex not in text
    assert hashlib.sha256(erika.bytes).hexdigest() not in text and hashlib.sha256(str(erika).encode()).hexdigest() \
        not in text
    entry = json.loads(text.splitlines()[-1])
    key_id, key = get_kernel().keys.ledger_key()
    assert entry == {"hash": subject_hash(key, erika), "key": key_id, "at": entry["at"]}
    assert key not in _every_key_in(read_key_document(get_settings().key_file))  # a subkey, not a stored key
    result = await restore(taken)
    assert (result.replayed, result.unreadable) == (1, 0)
    assert await raw("SELECT 1 FROM crm_person WHERE id = {}", erika) == []


async def test_a_ledger_with_raw_ids_from_before_hashing_still_replays(
        db: None, ledger: Path, tmp_path: Path) -> None:
    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    taken = await backup(tmp_path)
    with ledger.open("a") as fh:
        fh.write(json.dumps({"subject": str(erika), "at": "2026-01-01T00:00:00+00:00"}) + "\n")
    assert read_ledger(ledger).erased(get_kernel().keys, [erika]) == [erika]
    assert (await restore(taken)).replayed == 1


async def test_on_postgresql_no_wrapped_key_of_an_erased_person_stays_in_the_key_tables_file(db: None) -> None:
    if is_sqlite():
        pytest.skip("PostgreSQL only: SQLite overwrites deleted rows (secure_delete), tested in test_erasure")
    erika = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    wrapped = (await raw("SELECT wrapped FROM vault_subject_key WHERE subject_id = {}", erika))[0]["wrapped"]

    async def heap() -> bytes:
        await raw("CHECKPOINT")
        path = (await raw("SELECT pg_relation_filepath('vault_subject_key') AS p"))[0]["p"]
        return bytes((await raw("SELECT pg_read_binary_file({}) AS b", path))[0]["b"])

    assert wrapped.encode() in await heap()  # the check sees the row while it lives
    await people.erase_person(staff("admin"), erika)
    assert wrapped.encode() not in await heap()
