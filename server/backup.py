"""Database backups, and restores that replay the erasure ledger so erased people stay erased."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from server import gateway
from server.actor import system_actor
from server.audit.chain import Entry, append
from server.db import engine, flush_deleted_pages, raw, write_transaction
from server.identity.service import remove_customer_accounts
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.ledger import erased_subjects

REPLAY_BATCH = 500
SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
# A backup must hold these, or it is not a Mutual database.
REQUIRED_TABLES = ("audit_head", "audit_event", "crm_person", "vault_subject_key")
# Tables whose dead rows still hold an erased person's ciphertext or wrapped data key (PostgreSQL).
ERASURE_TABLES = ("crm_person", "crm_note", "identity_customer_account", "identity_session")


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


class ProgressBar(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[str, int], ProgressBar]
"""Called as factory(label, total); server.bench.progress.Progress fits."""


@dataclass(frozen=True)
class RestoreResult:
    backup_file: Path
    backend: str
    replayed: int
    """Erased people found in the backup and erased again."""
    already_absent: int
    """Ledger entries for people the backup no longer held (erased before it was taken)."""
    ledger_found: bool
    """False when there was no erasure ledger file at all (then nothing could be replayed)."""
    audit_seq: int
    """Sequence number of the audit event recording this restore."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sidecar_path(backup_file: Path) -> Path:
    return backup_file.with_name(backup_file.name + ".json")


def read_sidecar(backup_file: Path) -> dict[str, Any] | None:
    """The JSON written beside a backup (created, backend, size, sha256, audit head), if any."""
    path = sidecar_path(backup_file)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise BackupError(f"{path} is not readable JSON ({exc}); move it away to restore without it") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_empty_file(path: Path) -> None:
    """Create the file readable by the owner only, before any data goes into it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _target(folder: Path, suffix: str) -> Path:
    stamp = _now().strftime("%Y%m%dT%H%M%SZ")
    candidate, n = folder / f"mutual-{stamp}{suffix}", 2
    while any(candidate.with_name(candidate.name + extra).exists() for extra in ("", ".partial", ".json")):
        candidate, n = folder / f"mutual-{stamp}-{n}{suffix}", n + 1
    return candidate


# --- backup ---------------------------------------------------------------------------------


async def backup(dest_dir: Path | None = None) -> Path:
    """Copy the live database into `dest_dir` (default <var_dir>/backups) while the apps keep
    running; return the backup file. The key file and the erasure ledger are never copied."""
    settings = get_settings()
    folder = Path(dest_dir) if dest_dir is not None else settings.var_dir / "backups"
    for secret in (settings.key_file, settings.erasure_ledger):
        if secret.resolve().is_relative_to(folder.resolve()):
            raise BackupError(f"{folder} holds {secret}; choose a backup folder apart from the key file and "
                              "the erasure ledger, which are backed up separately")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = _target(folder, ".pgdump" if settings.is_postgres else ".sqlite3")
    partial = target.with_name(target.name + ".partial")
    _private_empty_file(partial)
    try:
        if settings.is_postgres:
            head = await _pg_backup(partial)
        else:
            head = await asyncio.to_thread(_sqlite_backup, settings.sqlite_path, partial)
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    info = {
        "format": 1,
        "file": target.name,
        "created": _now().isoformat(),
        "backend": "postgresql" if settings.is_postgres else "sqlite",
        "size": target.stat().st_size,
        "sha256": _sha256(target),
        "audit_head": head,
        "note": "The key file and the erasure ledger are not in this backup; back them up separately.",
    }
    side = sidecar_path(target)
    _private_empty_file(side)
    side.write_text(json.dumps(info, indent=2) + "\n")
    _fsync_dir(folder)
    return target


def _sqlite_backup(live: Path, target: Path) -> dict[str, Any]:
    """The SQLite online backup API copies one consistent snapshot in a single step (pages=-1),
    holding only a read transaction, so WAL writers carry on meanwhile."""
    if not live.is_file():
        raise BackupError(f"no database at {live}; run `mutual migrate` first or check MUTUAL_DATABASE_URL")
    source_uri = f"{live.resolve().as_uri()}?mode=rw"
    with contextlib.closing(sqlite3.connect(source_uri, uri=True, timeout=30)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        # One self-contained file: opening it later must not leave -wal/-shm files beside it.
        dst.execute("PRAGMA journal_mode=DELETE")
        row = dst.execute("SELECT seq, hash FROM audit_head WHERE name = 'main'").fetchone()
    return {"seq": int(row[0]), "hash": row[1]} if row else {"seq": 0, "hash": None}


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} was not found on PATH; install the PostgreSQL client tools matching the "
                          f"server's major version (Debian/Ubuntu: apt install postgresql-client-15)")
    return found


def _pg_connection() -> tuple[list[str], dict[str, str]]:
    """libpq arguments from the engine's own settings; the password goes in the environment,
    never on the command line where other local users could read it."""
    config = getattr(engine(), "config", {})
    args = [f"--host={config.get('host') or '127.0.0.1'}", f"--port={config.get('port') or 5432}",
            f"--username={config.get('user') or 'postgres'}", "--no-password"]
    env = dict(os.environ)
    if config.get("password"):
        env["PGPASSWORD"] = str(config["password"])
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return args, env


def _pg_database() -> str:
    return str(getattr(engine(), "config", {}).get("database") or "mutual")


async def _run_tool(argv: Sequence[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()[-2000:] or "no message"
        raise BackupError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): {message}")
    return out.decode(errors="replace")


async def _pg_backup(target: Path) -> dict[str, Any]:
    """pg_dump reads the snapshot this transaction exported, so the audit head in the sidecar is
    exactly the one inside the dump."""
    pg_dump = _pg_tool("pg_dump")
    args, env = _pg_connection()
    async with engine().transaction():
        await raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = (await raw("SELECT pg_export_snapshot() AS snapshot"))[0]["snapshot"]
        heads = await raw("SELECT seq, hash FROM audit_head WHERE name = 'main'")
        await _run_tool([pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={target}", *args,
                         f"--dbname={_pg_database()}"], env)
    return {"seq": int(heads[0]["seq"]), "hash": heads[0]["hash"]} if heads else {"seq": 0, "hash": None}


# --- restore --------------------------------------------------------------------------------


async def restore(backup_file: Path, *, progress: ProgressFactory | None = None) -> RestoreResult:
    """Replace the live database with a backup (the apps must be stopped), then erase again
    everyone in the erasure ledger. Everything that can be checked is checked first."""
    backup_file = Path(backup_file)
    settings = get_settings()
    if not backup_file.is_file():
        raise BackupError(f"backup file {backup_file} does not exist; nothing was changed")
    ledger = settings.erasure_ledger
    try:
        subjects = list(dict.fromkeys(erased_subjects(ledger)))
    except ValueError as exc:
        raise BackupError(str(exc)) from None
    policy_version = get_kernel().policies.version  # keys and policies usable, before any change
    _check_backup(backup_file, postgres=settings.is_postgres)
    if settings.is_postgres:
        await _pg_restore(backup_file)
    else:
        await asyncio.to_thread(_sqlite_restore, backup_file, settings.sqlite_path)
    replayed, absent = await replay_erasures(subjects, progress=progress)
    side = read_sidecar(backup_file) or {}
    head = side.get("audit_head") or {}
    reason = (f"restored from {backup_file.name}"
              + (f" (audit head {head['seq']} when taken)" if "seq" in head else "")
              + f"; erasure ledger replayed: {replayed} erased again, {absent} already absent"
              + ("" if ledger.exists() else "; no erasure ledger file was present"))
    seq = await append(system_actor("restore"),
                       Entry(action="restore", entity="database", purpose="compliance_audit", reason=reason),
                       policy_version)
    if settings.is_postgres:
        if replayed:
            await _pg_vacuum()
    else:
        await flush_deleted_pages()
    return RestoreResult(backup_file=backup_file, backend="postgresql" if settings.is_postgres else "sqlite",
                         replayed=replayed, already_absent=absent, ledger_found=ledger.exists(), audit_seq=seq)


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
    if side is not None and side.get("sha256") and side["sha256"] != _sha256(backup_file):
        raise BackupError(f"{backup_file} does not match the checksum in {sidecar_path(backup_file).name}: the "
                          "file is damaged or was changed; nothing was changed")
    if not postgres:
        _check_sqlite_backup(backup_file)


def _check_sqlite_backup(backup_file: Path) -> None:
    uri = f"{backup_file.resolve().as_uri()}?mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            check = conn.execute("PRAGMA quick_check").fetchall()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{backup_file} cannot be read as a SQLite database ({exc}); nothing was changed") from None
    if check != [("ok",)]:
        raise BackupError(f"{backup_file} is damaged ({check[0][0]}); nothing was changed")
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        raise BackupError(f"{backup_file} is not a Mutual database (no {', '.join(missing)}); nothing was changed")


def _sqlite_restore(backup_file: Path, live: Path) -> None:
    """Copy the backup into the live file through SQLite itself, under an exclusive lock.

    The exclusive lock fails at once if any other connection (a running app) has the database
    open, so a restore never pulls the file from under one. SQLite writes the pages as one
    transaction and folds them into the file; stale -wal/-shm files of the old database are
    recovered or removed while the lock is held, never guessed at.
    """
    live.parent.mkdir(parents=True, exist_ok=True)
    source_uri = f"{backup_file.resolve().as_uri()}?mode=ro&immutable=1"
    with contextlib.closing(sqlite3.connect(live, timeout=2)) as dst, \
            contextlib.closing(sqlite3.connect(source_uri, uri=True)) as src:
        dst.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            dst.execute("BEGIN EXCLUSIVE")
            dst.execute("COMMIT")
        except sqlite3.OperationalError:
            raise BackupError(f"the database {live} is in use; stop the portal and the backoffice (and any other "
                              "`mutual` command) before restoring; nothing was changed") from None
        try:
            src.backup(dst)
        except sqlite3.Error as exc:
            raise BackupError(f"restoring {backup_file} into {live} failed ({exc}); the database is unchanged") \
                from None
        dst.execute("PRAGMA journal_mode=WAL")
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # Exclusive mode keeps the WAL index in memory: a -shm file now is a leftover nobody uses.
        Path(f"{live}-shm").unlink(missing_ok=True)
    # Closing the only connection checkpointed the WAL and deleted it.


async def _pg_other_sessions() -> str:
    """Names of other client sessions on this database ('' when none), allowing a just-closed
    connection of this process a moment to leave pg_stat_activity."""
    sql = ("SELECT coalesce(string_agg(DISTINCT coalesce(nullif(application_name, ''), 'unnamed client'), ', '), "
           "'') AS apps FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
           "AND backend_type = 'client backend'")
    apps = ""
    for _ in range(15):
        apps = (await raw(sql))[0]["apps"]
        if not apps:
            return ""
        await asyncio.sleep(0.2)
    return apps


async def _pg_restore(backup_file: Path) -> None:
    pg_restore = _pg_tool("pg_restore")
    args, env = _pg_connection()
    listing = await _run_tool([pg_restore, "--list", str(backup_file)], env)
    missing = [t for t in REQUIRED_TABLES if not any(f" TABLE public {t} " in line or
                                                     line.rstrip().endswith(f" TABLE public {t}")
                                                     for line in listing.splitlines())]
    if missing:
        raise BackupError(f"{backup_file} is not a Mutual database dump (no {', '.join(missing)}); "
                          "nothing was changed")
    others = await _pg_other_sessions()
    if others:
        raise BackupError(f"the database {_pg_database()} is in use by: {others}; stop the portal and the "
                          "backoffice (and other clients) before restoring; nothing was changed")
    # One transaction: a failure part-way leaves the live database as it was.
    await _run_tool([pg_restore, "--clean", "--if-exists", "--no-owner", "--single-transaction", *args,
                     f"--dbname={_pg_database()}", str(backup_file)], env)


async def _pg_vacuum() -> None:
    """Free the dead rows the replay left: VACUUM FULL rewrites the (small) key table, so no
    wrapped data key of an erased person stays in a data file; the rest is vacuumed in place."""
    await raw("VACUUM FULL vault_subject_key")
    for table in ERASURE_TABLES:
        await raw(f"VACUUM {table}")


async def _present(batch: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    marks = ", ".join("{}" for _ in batch)
    rows = await raw(
        f"SELECT id AS subject FROM crm_person WHERE id IN ({marks}) "
        f"UNION SELECT subject_id FROM vault_subject_key WHERE subject_id IN ({marks}) "
        f"UNION SELECT person_id FROM identity_customer_account WHERE person_id IN ({marks})",
        *batch, *batch, *batch)
    return sorted({uuid.UUID(str(r["subject"])) for r in rows})


async def replay_erasures(subjects: Sequence[uuid.UUID], *,
                          progress: ProgressFactory | None = None) -> tuple[int, int]:
    """Erase again every listed subject the database still holds, in batches of short write
    transactions; returns (erased again, already absent)."""
    bar = progress("erasure ledger replay", len(subjects)) if progress is not None and subjects else None
    replayed = 0
    try:
        for start in range(0, len(subjects), REPLAY_BATCH):
            batch = subjects[start:start + REPLAY_BATCH]
            async with write_transaction():
                present = await _present(batch)
                for person_id in present:
                    await remove_customer_accounts(person_id)
                if present:
                    await gateway.shred_subjects(present)
            replayed += len(present)
            if bar is not None:
                bar.advance(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return replayed, len(subjects) - replayed
