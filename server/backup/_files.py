"""What backup and restore share: the error, progress bars, the JSON sidecar, private files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


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
    rekeyed: int = 0
    """Data keys wrapped under a destroyed KEK, replaced by the same data key from the subject-key store."""
    unreadable: int = 0
    """People whose data key only a destroyed KEK opened and whom the store lacks (erased): removed."""


def now() -> dt.datetime:
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_empty_file(path: Path) -> None:
    """Create the file readable by the owner only, before any data goes into it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def target_name(folder: Path, suffix: str) -> Path:
    stamp = now().strftime("%Y%m%dT%H%M%SZ")
    candidate, n = folder / f"mutual-{stamp}{suffix}", 2
    while any(candidate.with_name(candidate.name + extra).exists() for extra in ("", ".partial", ".json")):
        candidate, n = folder / f"mutual-{stamp}-{n}{suffix}", n + 1
    return candidate
