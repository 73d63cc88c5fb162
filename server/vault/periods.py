"""Crypto-periods: an erasure ends the period, so no key that remains opens an erased person's backup.

A backup holds wrapped data keys, and the key file holds the key-encryption keys (KEKs) that
unwrap them. Deleting a person's row in the live database does nothing to a backup taken
before. So an erasure closes the crypto-period: a new KEK becomes active, every surviving data
key is rewrapped under it, the survivors' wrapped keys are written to the subject-key store (a
file beside the key file, outside database backups), and then every older KEK is destroyed.
A backup from before the erasure then still holds the erased person's key wrapped under a KEK
that no longer exists anywhere Mutual keeps keys; its survivors are restored with their data
keys from the store (the same data keys, wrapped under the KEK of today). An old copy of the
store is wrapped under destroyed KEKs too, so the store's own history honours erasure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from server.db import raw
from server.vault.keys import (
    FOLLOW_INTERVAL,
    FileKeyProvider,
    KeyError_,
    locked_key_file,
    read_key_document,
    remove_kek,
    write_key_document,
)
from server.vault.keystore import write_store
from server.vault.rotation import TABLE, rotate


@dataclass(frozen=True)
class PeriodResult:
    active: str
    """The KEK of the new period."""
    destroyed: tuple[str, ...]
    """KEKs removed from the key file for good."""
    stored: int
    """Wrapped data keys written to the subject-key store."""


async def close_period(key_file: Path, store: Path, *, settle: float | None = None) -> PeriodResult:
    """End the crypto-period: new KEK, survivors rewrapped and stored, every older KEK destroyed.

    `settle` (default: twice the key-file follow interval) is how long other processes get to
    notice the new KEK before the stragglers they wrapped under the old one are rewrapped.
    """
    result = await rotate(key_file)
    await asyncio.sleep(2 * FOLLOW_INTERVAL if settle is None else settle)
    result = await rotate(key_file)  # continues the unfinished rotation: the stragglers
    with locked_key_file(key_file):
        doc = read_key_document(key_file)
        FileKeyProvider.from_document(doc, str(key_file))
        active = doc["kek"]["active"]
        if active != result.active:
            raise KeyError_(f"another rotation made {active!r} active meanwhile; run `mutual keys close-period` "
                            "again")
        stored = await write_store(store, active)
        old = sorted(kid for kid in doc["kek"]["keys"] if kid != active)
        fresh = doc
        for kid in old:
            fresh = remove_kek(fresh, kid)
        write_key_document(key_file, fresh)
        late = await raw(f"SELECT COUNT(*) AS n FROM {TABLE} WHERE kek_id <> {{}}", active)
        if int(late[0]["n"]):  # a process wrapped a key under an old KEK after all: keep them, retry later
            write_key_document(key_file, doc)
            raise KeyError_("a data key was wrapped under an old key-encryption key while the period closed; "
                            "run `mutual keys close-period` to finish")
    return PeriodResult(active=active, destroyed=tuple(old), stored=stored)
