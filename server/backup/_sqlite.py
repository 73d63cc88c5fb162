"""SQLite: online backup into one self-contained file, checks of a backup file, restore under an exclusive lock."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from server.backup._files import BackupError

SQLITE_MAGIC = b"SQLite format 3\x00"
# A backup must hold these, or it is not a Mutual database.
REQUIRED_TABLES = ("audit_head", "audit_event", "crm_person", "vault_subject_key")


def sqlite_backup(live: Path, target: Path) -> dict[str, Any]:
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


def check_sqlite_backup(backup_file: Path) -> None:
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


def sqlite_restore(backup_file: Path, live: Path) -> None:
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
