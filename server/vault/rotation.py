"""Key-encryption key rotation: add a KEK, rewrap every data key under it in batches, retire old KEKs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.db import engine, is_sqlite, raw, write_transaction
from server.settings import get_settings
from server.vault.cipher import WrappedKey, unwrap_data_key, wrap_data_key
from server.vault.keys import (
    INLINE_VARIABLE,
    FileKeyProvider,
    KeyError_,
    add_kek,
    inline_key_document,
    locked_key_file,
    read_key_document,
    remove_kek,
    write_key_document,
)
from server.vault.keystore import write_store

TABLE = "vault_subject_key"


@dataclass(frozen=True)
class RotationResult:
    active: str
    """The KEK every data key is (being) rewrapped under."""
    added: str | None
    """The KEK this run added to the key file, or None when it continued an unfinished rotation."""
    rewrapped: int
    """Data keys this run rewrapped."""
    remaining: int
    """Data keys still wrapped by another KEK (non-zero only when stopped early)."""

    @property
    def complete(self) -> bool:
        return self.remaining == 0


def _refuse_inline(action: str) -> None:
    if inline_key_document() is not None:
        raise KeyError_(
            f"cannot {action}: the keys come from {INLINE_VARIABLE}, an inline document this command "
            f"cannot rewrite; put the document in a key file, point MUTUAL_KEY_FILE at it, unset "
            f"{INLINE_VARIABLE}, restart, and run the command again"
        )


async def _pending(active: str) -> int:
    rows = await raw(f"SELECT COUNT(*) AS n FROM {TABLE} WHERE kek_id <> {{}}", active)
    return int(rows[0]["n"])


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def _update_many(rows: Sequence[tuple[str, str, Any, str]]) -> None:
    """(new kek_id, wrapped, subject_id, old kek_id) per row, in the open write transaction.

    The old KEK in the WHERE clause makes a row rewrapped or erased meanwhile a no-op.
    """
    txn = engine().current_transaction.get()
    assert txn is not None, "needs an open write_transaction()"
    if is_sqlite():
        sql = f"UPDATE {TABLE} SET kek_id = ?, wrapped = ? WHERE subject_id = ? AND kek_id = ?"
    else:
        sql = f"UPDATE {TABLE} SET kek_id = $1, wrapped = $2 WHERE subject_id = $3 AND kek_id = $4"
    await txn.connection.executemany(sql, rows)


async def rotate(
    provider_path: Path,
    *,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
) -> RotationResult:
    """Rewrap every data key under the active KEK, first adding a new one unless a rotation is unfinished.

    Unfinished means some data key is wrapped by another KEK than the active one; a run then continues
    it instead of adding a key. The new key is on disk before any data key names it. `stop_after`
    stops after that many data keys (an interrupted run). `progress(done, total)` follows each batch.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    _refuse_inline("rotate keys")
    added: str | None = None
    with locked_key_file(provider_path):
        doc = read_key_document(provider_path)
        FileKeyProvider.from_document(doc, str(provider_path))  # refuse a broken file before changing it
        if not await _pending(doc["kek"]["active"]):
            doc, added = add_kek(doc)
            write_key_document(provider_path, doc)
    # A snapshot of the file: every old KEK it holds unwraps, the active one wraps.
    provider = FileKeyProvider.from_document(doc, str(provider_path))
    active = provider.active
    total = await _pending(active)
    done = 0
    after: Any = None
    while stop_after is None or done < stop_after:
        limit = batch if stop_after is None else min(batch, stop_after - done)
        async with write_transaction():
            # Keyset order on the primary key: each batch starts where the last one ended, so a pass
            # reads the table once (a fresh scan per batch made rotation quadratic in the people).
            since = "" if after is None else " AND subject_id > {}"
            rows = await raw(
                f"SELECT subject_id, key_id, kek_id, wrapped FROM {TABLE} WHERE kek_id <> {{}}{since} "
                "ORDER BY subject_id LIMIT {}",
                *([active] if after is None else [active, after]), limit,
            )
            updates = []
            for row in rows:
                dk = unwrap_data_key(provider, _uuid(row["subject_id"]),
                                     WrappedKey(row["key_id"], row["kek_id"], row["wrapped"]))
                wrapped = wrap_data_key(provider, dk)
                updates.append((wrapped.kek_id, wrapped.wrapped, row["subject_id"], row["kek_id"]))
            if updates:
                await _update_many(updates)
        if not rows:
            break
        after = rows[-1]["subject_id"]
        done += len(rows)
        if progress is not None:
            progress(done, max(total, done))
    return RotationResult(active=active, added=added, rewrapped=done, remaining=await _pending(active))


def _key_document(provider_path: Path | None) -> tuple[dict[str, Any], str]:
    inline = inline_key_document()
    if inline is not None:
        return inline, INLINE_VARIABLE
    path = provider_path or get_settings().key_file
    return read_key_document(path), str(path)


async def key_status(provider_path: Path | None = None) -> dict[str, Any]:
    """{"active", "keks": {kek_id: wrapped data keys}, "data_keys", "unknown": KEKs the file lacks}.

    The keys come from MUTUAL_KEYS when set, else from `provider_path` (default: the settings' key file).
    """
    doc, source = _key_document(provider_path)
    provider = FileKeyProvider.from_document(doc, source)
    counts = {kid: 0 for kid in sorted(provider.keks)}
    rows = await raw(f"SELECT kek_id, COUNT(*) AS n FROM {TABLE} GROUP BY kek_id ORDER BY kek_id")
    for row in rows:
        counts[row["kek_id"]] = int(row["n"])
    return {
        "active": provider.active,
        "keks": counts,
        "data_keys": sum(counts.values()),
        "unknown": sorted(kid for kid in counts if kid not in provider.keks),
    }


async def _uses(key_id: str) -> int:
    rows = await raw(f"SELECT COUNT(*) AS n FROM {TABLE} WHERE kek_id = {{}}", key_id)
    return int(rows[0]["n"])


async def retire(path: Path, key_id: str) -> None:
    """Remove a KEK from the key file once no data key is wrapped by it and it is not active."""
    _refuse_inline("retire a key")
    with locked_key_file(path):
        doc = read_key_document(path)
        FileKeyProvider.from_document(doc, str(path))
        retired = remove_kek(doc, key_id)  # refuses the active key and a key the file lacks
        _refuse_while_used(key_id, await _uses(key_id))
        # Backups still hold data keys wrapped by it: the store carries them past its destruction.
        await write_store(get_settings().subject_key_store, doc["kek"]["active"])
        write_key_document(path, retired)
        # A process that had not yet seen the new active key may have wrapped one meanwhile.
        late = await _uses(key_id)
        if late:
            write_key_document(path, doc)
            _refuse_while_used(key_id, late)


def _refuse_while_used(key_id: str, count: int) -> None:
    if count:
        noun = "data key is" if count == 1 else "data keys are"
        raise KeyError_(
            f"key-encryption key {key_id!r} cannot be retired: {count} {noun} still wrapped by it; "
            "run `mutual keys rotate` to rewrap them, then retire it"
        )
