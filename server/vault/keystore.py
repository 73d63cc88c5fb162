"""The subject-key store: every data key wrapped under the current KEK, in a file beside the key file.

It is written when a crypto-period closes (at every erasure, and before a KEK is retired) and
lives with the keys, outside database backups. A restore takes from it the data keys of people
whose backed-up wrapped key names a destroyed KEK. An erased person is never in it, and every
older copy of it is wrapped under KEKs that are destroyed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from server.db import raw
from server.vault.keys import KeyError_

STORE_FORMAT = 1
TABLE = "vault_subject_key"


def _write_private(path: Path, text: str) -> None:
    """Atomic, private replace (temporary file beside it, fsync, rename)."""
    target = path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


async def write_store(store: Path, active: str) -> int:
    """Every data key of the database, all wrapped under `active`, into the subject-key store."""
    rows = await raw(f"SELECT subject_id, key_id, kek_id, wrapped FROM {TABLE} ORDER BY subject_id")
    stray = [r["kek_id"] for r in rows if r["kek_id"] != active]
    if stray:
        raise KeyError_(f"data keys are still wrapped by {stray[0]!r}, not the active {active!r}; "
                        "run `mutual keys close-period` again")
    doc = {"format": STORE_FORMAT, "kek": active, "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "keys": {str(r["subject_id"]): [r["key_id"], r["wrapped"]] for r in rows}}
    _write_private(store, json.dumps(doc) + "\n")
    return len(rows)


def read_store(store: Path) -> dict[uuid.UUID, tuple[str, str, str]]:
    """{subject: (key id, kek id, wrapped)} from the store; empty when there is none."""
    if not store.exists():
        return {}
    try:
        doc: dict[str, Any] = json.loads(store.read_text())
        return {uuid.UUID(sid): (entry[0], str(doc["kek"]), entry[1]) for sid, entry in doc["keys"].items()}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise KeyError_(f"subject-key store {store} is damaged ({exc}); restore it from the key backup "
                        "(it is written with the key file at every erasure)") from None
