"""Backups hold no readable personal data, and a restore replays the erasure ledger: erased stays erased."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import gateway
from server.audit.chain import verify_database
from server.backup import BackupError, backup, pg_tool, read_sidecar, restore
from server.crm import service as people
from server.db import is_sqlite, raw
from server.errors import NotFound
from server.identity.service import create_customer_account
from server.settings import get_settings
from server.vault.ledger import read_ledger
from tests.support import ERIKA, MAX, staff

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ledger() -> Iterator[Path]:
    """The session's erasure ledger, put back as it was after the test (tests may damage it)."""
    path = get_settings().erasure_ledger
    before = path.read_bytes() if path.exists() else None
    yield path
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


async def _erika_with_note_and_account() -> uuid.UUID:
    pid = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    await gateway.add_note(staff("admin"), purpose="customer_service", person_id=pid, body="canary note")
    await create_customer_account(pid, ERIKA["email"], "erika-portal-demo")
    return pid


async def _rows_of(pid: uuid.UUID) -> dict[str, int]:
    found = {}
    for table, column in [("crm_person", "id"), ("vault_subject_key", "subject_id"), ("crm_note", "person"),
                          ("identity_customer_account", "person_id")]:
        found[table] = len(await raw(f"SELECT 1 FROM {table} WHERE {column} = {{}}", pid))
    return found


def _clear_text_of(backup_file: Path) -> bytes:
    """What an attacker holding the file can read: the SQLite file's bytes, or the SQL a
    PostgreSQL custom-format (compressed) dump expands to."""
    if is_sqlite():
        return backup_file.read_bytes()
    return subprocess.run(["pg_restore", "--file=-", str(backup_file)], check=True, capture_output=True).stdout


class Bar:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.closed = label, total, 0, False

    def advance(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


async def test_a_person_erased_after_a_backup_stays_erased_when_that_backup_is_restored(
        db: None, ledger: Path, tmp_path: Path) -> None:
    erika = await _erika_with_note_and_account()
    max_id = await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    taken = await backup(tmp_path)
    await people.erase_person(staff("admin"), erika)
    bars: list[Bar] = []

    def factory(label: str, total: int) -> Bar:
        bars.append(Bar(label, total))
        return bars[-1]

    result = await restore(taken, progress=factory)

    assert result.replayed == 1
    assert await _rows_of(erika) == {"crm_person": 0, "vault_subject_key": 0, "crm_note": 0,
                                     "identity_customer_account": 0}
    with pytest.raises(NotFound):
        await gateway.get_person(staff("admin"), purpose="customer_service", person_id=erika)
    still = await gateway.get_person(staff("admin"), purpose="customer_service", person_id=max_id)
    assert (still["given_name"], still["email"]) == ("Max", MAX["email"])
    assert result.replayed + result.already_absent == len(read_ledger(ledger))
    assert len(bars) == 1 and bars[0].done == bars[0].total and bars[0].closed
    chain = await verify_database()
    assert chain.ok, chain.problem
    events = await raw("SELECT seq, action, actor_kind, reason FROM audit_event WHERE action = 'restore'")
    assert [(e["seq"], e["actor_kind"]) for e in events] == [(result.audit_seq, "system")]
    assert "1 erased again" in events[0]["reason"]


async def test_a_backup_holds_no_name_or_email_in_clear_text(db: None, tmp_path: Path) -> None:
    await _erika_with_note_and_account()
    await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    text = _clear_text_of(await backup(tmp_path))
    assert b"audit_head" in text  # the check reads real content
    for secret in (b"Mustermann", b"erika.mustermann@example.org", b"Heidestra", b"canary note",
                   b"1964-08-12"):
        assert secret not in text, secret


async def test_the_backup_folder_holds_the_backup_and_its_sidecar_but_no_key_file_or_ledger(
        db: None, ledger: Path, tmp_path: Path) -> None:
    pid = await _erika_with_note_and_account()
    await people.erase_person(staff("admin"), pid)  # so a ledger exists to be left out
    taken = await backup(tmp_path)
    settings = get_settings()
    assert ledger.exists() and settings.key_file.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name, taken.name + ".json"]
    assert taken.name.startswith("mutual-") and taken.name.endswith(".pgdump" if not is_sqlite() else ".sqlite3")
    contents = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in (settings.key_file.read_bytes(), ledger.read_bytes(), str(pid).encode()):
        assert secret not in contents
    info = read_sidecar(taken)
    assert info is not None
    head = (await raw("SELECT seq, hash FROM audit_head WHERE name = 'main'"))[0]
    assert info["audit_head"] == {"seq": head["seq"], "hash": head["hash"]}
    assert info["size"] == taken.stat().st_size
    assert info["backend"] == ("sqlite" if is_sqlite() else "postgresql")
    assert oct(taken.stat().st_mode & 0o777) == "0o600"


async def test_a_backup_goes_to_the_backups_folder_under_the_var_dir_by_default(db: None) -> None:
    taken = await backup()
    try:
        assert taken.parent == get_settings().var_dir / "backups"
        assert taken.exists() and (taken.parent / (taken.name + ".json")).exists()
    finally:
        taken.unlink(missing_ok=True)
        (taken.parent / (taken.name + ".json")).unlink(missing_ok=True)


async def test_a_backup_folder_that_holds_the_key_file_is_refused(db: None) -> None:
    settings = get_settings()
    with pytest.raises(BackupError, match="apart from the key file"):
        await backup(settings.key_file.parent)
    assert not list(settings.key_file.parent.glob("mutual-*"))


async def test_a_backup_taken_while_people_are_being_written_is_consistent(
        db: None, ledger: Path, tmp_path: Path) -> None:
    stop = asyncio.Event()

    async def keep_writing() -> int:
        n = 0
        while not stop.is_set():
            await gateway.create_person(staff("admin"), purpose="customer_service",
                                        values={**MAX, "email": f"max{n}@example.org"})
            n += 1
        return n

    for _ in range(20):
        await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.05)
    taken = await backup(tmp_path)
    stop.set()
    written = await writer
    assert written > 0
    head = read_sidecar(taken)["audit_head"]  # type: ignore[index]
    await restore(taken)
    chain = await verify_database()
    assert chain.ok, chain.problem
    assert chain.checked == head["seq"] + 1  # the backup's events, then the restore's
    people_rows = await raw("SELECT count(*) AS n FROM crm_person")
    create_events = await raw("SELECT count(*) AS n FROM audit_event WHERE action = 'create'")
    assert people_rows[0]["n"] == create_events[0]["n"] >= 20


async def test_restoring_a_missing_file_names_it_and_changes_nothing(db: None, tmp_path: Path) -> None:
    max_id = await gateway.create_person(staff("admin"), purpose="customer_service", values=MAX)
    missing = tmp_path / "mutual-20000101T000000Z.sqlite3"
    with pytest.raises(BackupError, match=str(missing)):
        await restore(missing)
    assert (await _rows_of(max_id))["crm_person"] == 1


async def test_a_damaged_ledger_line_stops_the_restore_before_the_database_is_replaced(
        db: None, ledger: Path, tmp_path: Path) -> None:
    taken = await backup(tmp_path)
    erika = await _erika_with_note_and_account()  # not in the backup: a restore would remove her
    with ledger.open("a") as fh:
        fh.write('{"subject": "not-a-uuid"}\n')
    with pytest.raises(BackupError, match="erasure ledger .* is damaged"):
        await restore(taken)
    assert (await _rows_of(erika))["crm_person"] == 1


async def test_a_changed_backup_file_is_refused_before_the_database_is_replaced(
        db: None, tmp_path: Path) -> None:
    taken = await backup(tmp_path)
    erika = await _erika_with_note_and_account()
    data = bytearray(taken.read_bytes())
    data[-100] ^= 0xFF
    taken.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="does not match the checksum"):
        await restore(taken)
    assert (await _rows_of(erika))["crm_person"] == 1


async def test_a_file_that_is_no_backup_is_refused_before_the_database_is_replaced(
        db: None, tmp_path: Path) -> None:
    erika = await _erika_with_note_and_account()
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    with pytest.raises(BackupError, match="neither a SQLite database nor a PostgreSQL"):
        await restore(bogus)
    assert (await _rows_of(erika))["crm_person"] == 1


async def test_a_restore_refuses_while_an_app_has_the_sqlite_database_open(db: None, tmp_path: Path) -> None:
    if not is_sqlite():
        pytest.skip("the SQLite lock check; PostgreSQL checks pg_stat_activity instead")
    import sqlite3

    taken = await backup(tmp_path)
    erika = await _erika_with_note_and_account()
    app = sqlite3.connect(get_settings().sqlite_path)
    try:
        app.execute("SELECT count(*) FROM crm_person").fetchone()
        with pytest.raises(BackupError, match="is in use; stop the portal and the backoffice"):
            await restore(taken)
    finally:
        app.close()
    assert (await _rows_of(erika))["crm_person"] == 1


async def test_a_restore_refuses_while_another_client_is_connected_to_postgresql(
        db: None, tmp_path: Path) -> None:
    if is_sqlite():
        pytest.skip("PostgreSQL only")
    import asyncpg

    taken = await backup(tmp_path)
    erika = await _erika_with_note_and_account()
    app = await asyncpg.connect(os.environ["MUTUAL_DATABASE_URL"], server_settings={"application_name": "portal"})
    try:
        with pytest.raises(BackupError, match="in use by: portal"):
            await restore(taken)
    finally:
        await app.close()
    assert (await _rows_of(erika))["crm_person"] == 1


def test_a_missing_postgresql_tool_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="pg_dump was not found on PATH"):
        pg_tool("pg_dump")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.backup_cli", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                          env=dict(os.environ))


async def test_restore_without_yes_refuses_when_stdin_is_not_a_terminal(db: None, tmp_path: Path) -> None:
    taken = await backup(tmp_path)
    erika = await _erika_with_note_and_account()
    done = await asyncio.to_thread(_cli, "restore", str(taken))
    assert done.returncode == 2
    assert "--yes" in done.stderr and "not a terminal" in done.stderr
    assert (await _rows_of(erika))["crm_person"] == 1


async def test_the_backup_command_writes_a_backup_and_reminds_of_the_key_file(db: None, tmp_path: Path) -> None:
    done = await asyncio.to_thread(_cli, "backup", "--to", str(tmp_path))
    assert done.returncode == 0, done.stderr
    written = [p for p in tmp_path.iterdir() if not p.name.endswith(".json")]
    assert len(written) == 1 and str(written[0]) in done.stdout
    assert str(get_settings().key_file) in done.stdout and "erasure ledger" in done.stdout
    assert json.loads((tmp_path / (written[0].name + ".json")).read_text())["file"] == written[0].name


async def test_the_restore_command_with_yes_restores_and_reports_the_replay(
        db: None, ledger: Path, tmp_path: Path) -> None:
    erika = await _erika_with_note_and_account()
    taken = await backup(tmp_path)
    await people.erase_person(staff("admin"), erika)
    done = await asyncio.to_thread(_cli, "restore", str(taken), "--yes")
    assert done.returncode == 0, done.stderr
    assert "1 erased people removed again" in done.stdout and "audit chain intact" in done.stdout
    assert (await _rows_of(erika))["crm_person"] == 0
