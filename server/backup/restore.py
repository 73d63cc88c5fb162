"""`restore()`: replace the live database with a backup, take back from the subject-key store the data
keys of survivors whose KEK an erasure destroyed, and erase again everyone in the erasure ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

from server import gateway
from server.actor import system_actor
from server.audit.chain import Entry, append
from server.backup._files import BackupError, ProgressFactory, RestoreResult, read_sidecar, sha256, sidecar_path
from server.backup._postgres import PG_MAGIC, pg_restore, pg_vacuum
from server.backup._sqlite import SQLITE_MAGIC, check_sqlite_backup, sqlite_restore
from server.db import flush_deleted_pages, raw, write_transaction
from server.identity.service import remove_customer_accounts
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.keys import KeyError_, KeyProvider, inline_key_document, read_key_document
from server.vault.keystore import read_store
from server.vault.ledger import Ledger, read_ledger

REPLAY_BATCH = 500
WITHOUT_LEDGER_FLAG = "--without-ledger"


def _load_ledger(path: Path, *, without_ledger: bool) -> Ledger:
    if not path.exists():
        if without_ledger:
            return Ledger()
        raise BackupError(f"there is no erasure ledger at {path} (MUTUAL_ERASURE_LEDGER); without it, people "
                          "erased after the backup was taken would come back. Restore the ledger from the key "
                          "backup and run the restore again, or, only if nobody was ever erased, run it with "
                          f"{WITHOUT_LEDGER_FLAG}; nothing was changed")
    try:
        return read_ledger(path)
    except ValueError as exc:
        raise BackupError(str(exc)) from None


def _destroyed_keks() -> set[str]:
    doc = inline_key_document() or read_key_document(get_settings().key_file)
    return set(doc.get("kek", {}).get("destroyed", []))


async def restore(backup_file: Path, *, progress: ProgressFactory | None = None,
                  without_ledger: bool = False) -> RestoreResult:
    """Replace the live database with a backup (the apps must be stopped), then erase again
    everyone in the erasure ledger. Everything that can be checked is checked first."""
    backup_file = Path(backup_file)
    settings = get_settings()
    if not backup_file.is_file():
        raise BackupError(f"backup file {backup_file} does not exist; nothing was changed")
    ledger_found = settings.erasure_ledger.exists()
    ledger = _load_ledger(settings.erasure_ledger, without_ledger=without_ledger)
    kernel = get_kernel()
    policy_version = kernel.policies.version  # keys and policies usable, before any change
    try:
        if ledger.hashes:
            kernel.keys.ledger_key()
        store = read_store(settings.subject_key_store)
        destroyed = _destroyed_keks()
    except KeyError_ as exc:
        raise BackupError(f"{exc}; nothing was changed") from None
    _check_backup(backup_file, postgres=settings.is_postgres)
    if settings.is_postgres:
        await pg_restore(backup_file)
    else:
        await asyncio.to_thread(sqlite_restore, backup_file, settings.sqlite_path)
    replayed, absent = await replay_erasures(kernel.keys, ledger, progress=progress)
    rekeyed, unreadable = await rekey_from_store(kernel.keys, store, destroyed)
    side = read_sidecar(backup_file) or {}
    head = side.get("audit_head") or {}
    reason = (f"restored from {backup_file.name}"
              + (f" (audit head {head['seq']} when taken)" if "seq" in head else "")
              + f"; erasure ledger replayed: {replayed} erased again, {absent} already absent"
              + f"; {rekeyed} data keys from the subject-key store, {unreadable} under destroyed keys removed"
              + ("" if ledger_found else "; no erasure ledger file was present (restore forced)"))
    seq = await append(system_actor("restore"),
                       Entry(action="restore", entity="database", purpose="compliance_audit", reason=reason),
                       policy_version)
    if settings.is_postgres:
        await pg_vacuum()
    else:
        await flush_deleted_pages()
    return RestoreResult(backup_file=backup_file, backend="postgresql" if settings.is_postgres else "sqlite",
                         replayed=replayed, already_absent=absent, ledger_found=ledger_found, audit_seq=seq,
                         rekeyed=rekeyed, unreadable=unreadable)


def _check_backup(backup_file: Path, *, postgres: bool) -> None:
    """Refuse a damaged, foreign or wrong-backend file before the live database is touched."""
    with backup_file.open("rb") as fh:
        magic = fh.read(len(SQLITE_MAGIC))
    kind = "sqlite" if magic == SQLITE_MAGIC else "postgresql" if magic.startswith(PG_MAGIC) else None
    if kind is None:
        raise BackupError(f"{backup_file} is neither a SQLite database nor a PostgreSQL custom-format dump; "
                          "nothing was changed")
    wanted = "postgresql" if postgres else "sqlite"
    if kind != wanted:
        raise BackupError(f"{backup_file} is a {kind} backup but this installation uses {wanted} "
                          "(MUTUAL_DATABASE_URL); nothing was changed")
    side = read_sidecar(backup_file)
    if side is not None and side.get("sha256") and side["sha256"] != sha256(backup_file):
        raise BackupError(f"{backup_file} does not match the checksum in {sidecar_path(backup_file).name}: the "
                          "file is damaged or was changed; nothing was changed")
    if not postgres:
        check_sqlite_backup(backup_file)


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def _shred(person_ids: Sequence[uuid.UUID]) -> None:
    async with write_transaction():
        for person_id in person_ids:
            await remove_customer_accounts(person_id)
        if person_ids:
            await gateway.shred_subjects(person_ids)


async def rekey_from_store(provider: KeyProvider, store: dict[uuid.UUID, tuple[str, str, str]],
                           destroyed: set[str]) -> tuple[int, int]:
    """Data keys wrapped by a KEK the key file lacks: the same data key from the store replaces it;
    one under a destroyed KEK that the store lacks belonged to an erased person, whose rows go.
    A KEK neither known nor destroyed is left alone (start-up then names the missing key)."""
    provider.active_kek_id  # noqa: B018 - a provider following its key file rereads it here
    rows = await raw("SELECT subject_id, key_id, kek_id FROM vault_subject_key")
    known = set(getattr(provider, "keks", {}))
    updates, gone = [], []
    for row in rows:
        if row["kek_id"] in known:
            continue
        sid = _uuid(row["subject_id"])
        stored = store.get(sid)
        if stored is not None and stored[0] == row["key_id"] and stored[1] in known:
            updates.append((stored[1], stored[2], sid))
        elif row["kek_id"] in destroyed:
            gone.append(sid)
    for start in range(0, len(updates), REPLAY_BATCH):
        async with write_transaction():
            for kek_id, wrapped, sid in updates[start:start + REPLAY_BATCH]:
                await raw("UPDATE vault_subject_key SET kek_id = {}, wrapped = {} WHERE subject_id = {}",
                          kek_id, wrapped, sid)
    for start in range(0, len(gone), REPLAY_BATCH):
        await _shred(gone[start:start + REPLAY_BATCH])
    return len(updates), len(gone)


async def _all_subjects() -> list[uuid.UUID]:
    rows = await raw("SELECT id AS subject FROM crm_person UNION SELECT subject_id FROM vault_subject_key "
                     "UNION SELECT person_id FROM identity_customer_account")
    return sorted({_uuid(r["subject"]) for r in rows})


async def replay_erasures(provider: KeyProvider, ledger: Ledger, *,
                          progress: ProgressFactory | None = None) -> tuple[int, int]:
    """Erase again every subject of the database the ledger lists (matched by keyed hash), in batches
    of short write transactions; returns (erased again, ledger entries the database did not hold)."""
    present = ledger.erased(provider, await _all_subjects()) if len(ledger) else []
    bar = progress("erasure ledger replay", len(present)) if progress is not None and present else None
    try:
        for start in range(0, len(present), REPLAY_BATCH):
            batch = present[start:start + REPLAY_BATCH]
            await _shred(batch)
            if bar is not None:
                bar.advance(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return len(present), max(len(ledger) - len(present), 0)
