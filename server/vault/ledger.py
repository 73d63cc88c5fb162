"""The erasure ledger: which subjects were crypto-shredded, kept beside the keys, outside backups.

A restored backup still holds an erased person's ciphertext and wrapped data key; replaying
the ledger destroys them again, so erased people stay erased. Entries name only the random
subject id, which after erasure links to nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path


def record_erasure(ledger: Path, subject_id: uuid.UUID) -> None:
    """Append and fsync before the erasure commits: a crash in between errs towards erasing."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"subject": str(subject_id), "at": dt.datetime.now(dt.UTC).isoformat()})
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def erased_subjects(ledger: Path) -> list[uuid.UUID]:
    if not ledger.exists():
        return []
    subjects = []
    for number, line in enumerate(ledger.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            subjects.append(uuid.UUID(json.loads(line)["subject"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"erasure ledger {ledger} line {number} is damaged; restore it from the key "
                             "backup before restoring data, or erased people could come back") from None
    return subjects
