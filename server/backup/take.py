"""`backup()`: copy the live database into a backup folder while the apps keep running."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from server.audit import flush
from server.backup._files import BackupError, fsync_dir, now, private_empty_file, sha256, sidecar_path, target_name
from server.backup._postgres import pg_backup
from server.backup._sqlite import sqlite_backup
from server.settings import get_settings
from server.vault.ledger import ensure_ledger


async def backup(dest_dir: Path | None = None) -> Path:
    """Copy the live database into `dest_dir` (default <var_dir>/backups) while the apps keep
    running; return the backup file. The key file, the subject-key store and the erasure ledger
    are never copied; the ledger is created (empty) if missing, so it is there to be backed up."""
    settings = get_settings()
    folder = Path(dest_dir) if dest_dir is not None else settings.var_dir / "backups"
    for secret in (settings.key_file, settings.erasure_ledger, settings.subject_key_store):
        if secret.resolve().is_relative_to(folder.resolve()):
            raise BackupError(f"{folder} holds {secret}; choose a backup folder apart from the key file, the "
                              "subject-key store and the erasure ledger, which are backed up separately")
    ensure_ledger(settings.erasure_ledger)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = target_name(folder, ".pgdump" if settings.is_postgres else ".sqlite3")
    partial = target.with_name(target.name + ".partial")
    private_empty_file(partial)
    try:
        await flush()  # every recorded audit event is chained, so the sidecar's head covers it
        if settings.is_postgres:
            head = await pg_backup(partial)
        else:
            head = await asyncio.to_thread(sqlite_backup, settings.sqlite_path, partial)
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    info = {
        "format": 1,
        "file": target.name,
        "created": now().isoformat(),
        "backend": "postgresql" if settings.is_postgres else "sqlite",
        "size": target.stat().st_size,
        "sha256": sha256(target),
        "audit_head": head,
        "note": "The key file, the subject-key store and the erasure ledger are not in this backup; back them "
                "up separately, after every erasure.",
    }
    side = sidecar_path(target)
    private_empty_file(side)
    side.write_text(json.dumps(info, indent=2) + "\n")
    fsync_dir(folder)
    return target
