"""Data keys in the database: create one per subject, load many at once, unwrap each once."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from server.vault.cipher import DataKey, WrappedKey, new_data_key, unwrap_data_key
from server.vault.keys import KeyProvider
from server.vault.tables import SubjectKey


async def create_subject_key(provider: KeyProvider, subject_id: uuid.UUID) -> DataKey:
    dk, wrapped = new_data_key(provider, subject_id)
    await SubjectKey.insert(
        SubjectKey(
            subject_id=subject_id,
            key_id=wrapped.key_id,
            kek_id=wrapped.kek_id,
            wrapped=wrapped.wrapped,
            created_at=dt.datetime.now(dt.timezone.utc),
        )
    )
    return dk


async def load_data_keys(provider: KeyProvider, subject_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, DataKey]:
    """One query for all subjects of a page; a subject whose key is gone is simply absent."""
    ids = list(set(subject_ids))
    if not ids:
        return {}
    rows = await SubjectKey.select().where(SubjectKey.subject_id.is_in(ids))
    keys: dict[uuid.UUID, DataKey] = {}
    for row in rows:
        sid = row["subject_id"] if isinstance(row["subject_id"], uuid.UUID) else uuid.UUID(str(row["subject_id"]))
        keys[sid] = unwrap_data_key(provider, sid, WrappedKey(row["key_id"], row["kek_id"], row["wrapped"]))
    return keys
