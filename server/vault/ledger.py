"""The erasure ledger: which subjects were crypto-shredded, kept beside the keys, outside backups.

A restored backup still holds an erased person's rows; replaying the ledger destroys them
again, so erased people stay erased. An entry names no subject id: it holds an HMAC of the id
under a subkey of the key file's ledger key, so the ledger alone says only how many were erased
and when; whoever holds it and the key file can test an id they already have, nothing more.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from server.vault.keys import (
    FileKeyProvider,
    KeyError_,
    KeyProvider,
    locked_key_file,
    new_ledger_entry,
    read_key_document,
    write_key_document,
)


def subject_hash(key: bytes, subject_id: uuid.UUID) -> str:
    return hmac.new(key, b"subject:" + subject_id.bytes, hashlib.sha256).hexdigest()


def ledger_key(provider: KeyProvider) -> tuple[str, bytes]:
    """The ledger subkey; a key file written before the ledger was keyed gains its ledger key here."""
    if isinstance(provider, FileKeyProvider) and provider.ledger_root is None and provider.path is not None:
        with locked_key_file(provider.path):
            doc = read_key_document(provider.path)
            if "ledger" not in doc:
                doc["ledger"] = new_ledger_entry()
                write_key_document(provider.path, doc)
    return provider.ledger_key()


def record_erasure(ledger: Path, provider: KeyProvider, subject_id: uuid.UUID) -> None:
    """Append and fsync before the erasure commits: a crash in between errs towards erasing."""
    key_id, key = ledger_key(provider)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"hash": subject_hash(key, subject_id), "key": key_id,
                       "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_ledger(ledger: Path) -> None:
    """An empty ledger, private, so it exists to be backed up before anyone is erased."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))


@dataclass
class Ledger:
    """What a ledger file says: hashes per ledger key, and raw ids written by versions before hashing."""

    hashes: dict[str, set[str]] = field(default_factory=dict)
    legacy: set[uuid.UUID] = field(default_factory=set)

    def __len__(self) -> int:
        return sum(len(v) for v in self.hashes.values()) + len(self.legacy)

    def erased(self, provider: KeyProvider, subject_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
        """Those of `subject_ids` that the ledger lists as erased."""
        found = []
        key: bytes | None = None
        if self.hashes:
            key_id, key = provider.ledger_key()
            unknown = [k for k in self.hashes if k != key_id]
            if unknown:
                raise KeyError_(f"the erasure ledger has entries under ledger key {unknown[0]!r} but the key file "
                                f"holds {key_id!r}; restore the key file that belongs to this ledger")
        wanted = self.hashes.get(key_id, set()) if key is not None else set()
        for sid in subject_ids:
            if sid in self.legacy or (key is not None and subject_hash(key, sid) in wanted):
                found.append(sid)
        return found


def read_ledger(ledger: Path) -> Ledger:
    """The ledger's entries; ValueError naming the line when one is damaged."""
    result = Ledger()
    if not ledger.exists():
        return result
    for number, line in enumerate(ledger.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if "hash" in entry:
                result.hashes.setdefault(str(entry["key"]), set()).add(str(entry["hash"]))
            else:
                result.legacy.add(uuid.UUID(entry["subject"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"erasure ledger {ledger} line {number} is damaged; restore it from the key "
                             "backup before restoring data, or erased people could come back") from None
    return result
