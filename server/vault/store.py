"""Data keys in the database: create one per subject, load many at once, unwrap each once."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import uuid
from collections.abc import Iterable, Iterator

from server.db import insert_many
from server.vault.cipher import DataKey, WrappedKey, new_data_key, unwrap_data_key
from server.vault.keys import KeyProvider
from server.vault.tables import SubjectKey

# Data keys unwrapped during the current request: each at most once per request, never longer.
_REQUEST_KEYS: contextvars.ContextVar[dict[uuid.UUID, DataKey] | None] = contextvars.ContextVar(
    "mutual_request_keys", default=None)


@contextlib.contextmanager
def request_key_cache() -> Iterator[None]:
    """Scope in which an unwrapped data key is reused (one web request); dropped at the end."""
    token = _REQUEST_KEYS.set({})
    try:
        yield
    finally:
        _REQUEST_KEYS.reset(token)


def _unwrap(provider: KeyProvider, subject_id: uuid.UUID, wrapped: WrappedKey) -> DataKey:
    cache = _REQUEST_KEYS.get()
    if cache is not None and (dk := cache.get(subject_id)) is not None and dk.key_id == wrapped.key_id:
        return dk
    dk = unwrap_data_key(provider, subject_id, wrapped)
    if cache is not None:
        cache[subject_id] = dk
    return dk


async def create_subject_key(provider: KeyProvider, subject_id: uuid.UUID) -> DataKey:
    return (await create_subject_keys(provider, [subject_id]))[subject_id]


async def create_subject_keys(provider: KeyProvider, subject_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, DataKey]:
    """A fresh data key per subject, stored wrapped, in one statement."""
    now = dt.datetime.now(dt.UTC)
    keys: dict[uuid.UUID, DataKey] = {}
    rows = []
    for subject_id in subject_ids:
        dk, wrapped = new_data_key(provider, subject_id)
        keys[subject_id] = dk
        rows.append((subject_id, wrapped.key_id, wrapped.kek_id, wrapped.wrapped, now))
    await insert_many(SubjectKey._meta.tablename, ["subject_id", "key_id", "kek_id", "wrapped", "created_at"], rows)
    return keys


async def load_data_keys(provider: KeyProvider, subject_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, DataKey]:
    """One query for all subjects of a page; a subject whose key is gone is simply absent."""
    ids = list(set(subject_ids))
    if not ids:
        return {}
    rows = await SubjectKey.select().where(SubjectKey.subject_id.is_in(ids))
    keys: dict[uuid.UUID, DataKey] = {}
    for row in rows:
        sid = row["subject_id"] if isinstance(row["subject_id"], uuid.UUID) else uuid.UUID(str(row["subject_id"]))
        keys[sid] = _unwrap(provider, sid, WrappedKey(row["key_id"], row["kek_id"], row["wrapped"]))
    return keys


# Reading a page of people and their data keys in one statement saves a round trip per request.
KEY_COLUMNS = "k.key_id AS dk_key_id, k.kek_id AS dk_kek_id, k.wrapped AS dk_wrapped"


def key_join(alias: str) -> str:
    return f"LEFT JOIN vault_subject_key k ON k.subject_id = {alias}.id"


def keys_from_rows(provider: KeyProvider, rows: Iterable[dict], id_column: str = "id") -> dict[uuid.UUID, DataKey]:
    """Unwrap the data keys selected with KEY_COLUMNS; an erased subject has none."""
    keys: dict[uuid.UUID, DataKey] = {}
    for row in rows:
        if row.get("dk_wrapped") is None:
            continue
        sid = row[id_column] if isinstance(row[id_column], uuid.UUID) else uuid.UUID(str(row[id_column]))
        if sid not in keys:
            keys[sid] = _unwrap(provider, sid, WrappedKey(row["dk_key_id"], row["dk_kek_id"], row["dk_wrapped"]))
    return keys


async def shred_subject_keys(subject_ids: Iterable[uuid.UUID]) -> int:
    """Destroy data keys: every token they sealed, in this database or any copy, is unreadable."""
    ids = list(subject_ids)
    if not ids:
        return 0
    existing = await SubjectKey.count().where(SubjectKey.subject_id.is_in(ids))
    await SubjectKey.delete().where(SubjectKey.subject_id.is_in(ids))
    return int(existing)


async def check_keys_match(provider: KeyProvider) -> None:
    """Unwrap one data key per key-encryption key in use: a key file that does not belong to this
    database stops start-up here, with a message, instead of failing on the first page view."""
    from server.vault.cipher import DecryptionFailed
    from server.vault.keys import KeyError_

    in_use = await SubjectKey.select(SubjectKey.kek_id).distinct()
    for entry in in_use:
        rows = await SubjectKey.select().where(SubjectKey.kek_id == entry["kek_id"]).limit(1)
        row = rows[0]
        sid = row["subject_id"] if isinstance(row["subject_id"], uuid.UUID) else uuid.UUID(str(row["subject_id"]))
        try:
            unwrap_data_key(provider, sid, WrappedKey(row["key_id"], row["kek_id"], row["wrapped"]))
        except DecryptionFailed:
            raise KeyError_(
                f"the key file's key-encryption key {entry['kek_id']!r} does not unwrap this database's data "
                "keys: the key file belongs to another database. Restore the key file that was in use for "
                "this database (MUTUAL_KEY_FILE)"
            ) from None
