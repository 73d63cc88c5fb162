"""Ed25519-signed checkpoints of the audit chain: signing every N events and on demand, and retention pruning."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.audit.chain import _iso, verify_database
from server.audit.export_verify import EXPORT_EVENT_FIELDS, EXPORT_FORMAT, verify_export
from server.audit.sequencer import flush
from server.audit.signing import (
    checkpoint_message,
    checkpoint_problem,
    ensure_dev_signing_key,
    key_id,
    load_signing_key,
    sign_checkpoint,
    signing_key_path,
    trusted_key_id,
    verify_checkpoint,
    write_signing_key,
)
from server.db import is_sqlite, raw, write_transaction

__all__ = [
    "CHECKPOINT_EVERY", "EXPORT_EVENT_FIELDS", "EXPORT_FORMAT", "checkpoint_message", "checkpoint_now",
    "checkpoint_problem", "checkpoints_covering", "ensure_dev_signing_key", "key_id", "latest_checkpoint",
    "maybe_checkpoint", "prune", "sign_checkpoint", "signed_head", "trusted_key_id", "verify_checkpoint",
    "verify_export", "write_signing_key",
]

CHECKPOINT_EVERY = int(os.environ.get("MUTUAL_AUDIT_CHECKPOINT_EVERY", "1000"))
CHECKPOINT_FIELDS = ("seq", "hash", "at", "key_id", "public_key", "signature", "format_version", "log_id")


def _view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"seq": int(row["seq"]), "hash": row["hash"], "at": _iso(row["at"]), "key_id": row["key_id"],
            "public_key": row["public_key"], "signature": row["signature"],
            "format_version": int(row["format_version"]), "log_id": row["log_id"]}


_SELECT = f"SELECT {', '.join(CHECKPOINT_FIELDS)} FROM audit_checkpoint"


async def _store(cp: Mapping[str, Any], at: dt.datetime) -> None:
    await raw(f"INSERT INTO audit_checkpoint ({', '.join(CHECKPOINT_FIELDS)}) VALUES ({{}}, {{}}, {{}}, {{}}, {{}}, "
              "{}, {}, {})", cp["seq"], cp["hash"], at, cp["key_id"], cp["public_key"], cp["signature"],
              cp["format_version"], cp["log_id"])


async def _log_id() -> str:
    rows = await raw("SELECT log_id FROM audit_head WHERE name = 'main'")
    return str(rows[0]["log_id"]) if rows else ""


async def _checkpoint_at(seq: int, digest: str, log_id: str | None = None) -> dict[str, Any] | None:
    """Reuse a stored checkpoint at `seq`, or sign and store one; None without a signing key."""
    existing = await raw(f"{_SELECT} WHERE seq = {{}}", seq)
    if existing:
        return _view(existing[0])
    key = load_signing_key()
    if key is None:
        return None
    at = dt.datetime.now(dt.UTC)
    cp = sign_checkpoint(key, seq, digest, at, log_id if log_id is not None else await _log_id())
    await _store(cp, at)
    return cp


async def maybe_checkpoint(seq: int, digest: str, at: dt.datetime, *, batch_start: int | None = None,
                           log_id: str = "") -> None:
    """Called by append_many in its transaction: sign the batch's last event when the batch passed
    a multiple of CHECKPOINT_EVERY (events batch_start..seq were just appended)."""
    every = CHECKPOINT_EVERY
    first = seq if batch_start is None else batch_start
    if every <= 0 or seq // every == (first - 1) // every:
        return
    key = load_signing_key()
    if key is None:
        return
    await _store(sign_checkpoint(key, seq, digest, at, log_id), at)


async def signed_head() -> dict[str, Any] | None:
    """In the caller's write transaction: the head, signed (a stored checkpoint at it, reused or made now),
    or unsigned ({seq, hash, log_id}) without a signing key; None for an empty chain."""
    lock = "" if is_sqlite() else " FOR UPDATE"
    heads = await raw(f"SELECT seq, hash, log_id FROM audit_head WHERE name = 'main'{lock}")
    if not heads or int(heads[0]["seq"]) == 0:
        return None
    seq, digest, log_id = int(heads[0]["seq"]), heads[0]["hash"], heads[0]["log_id"]
    cp = await _checkpoint_at(seq, digest, log_id)
    return cp if cp is not None else {"seq": seq, "hash": digest, "log_id": log_id}


async def checkpoint_now() -> dict[str, Any] | None:
    """Sign the chain's current head (or return the checkpoint already there); None for an empty chain.

    Raises RuntimeError when there is no signing key."""
    await flush()
    async with write_transaction():
        cp = await signed_head()
        if cp is None:
            return None
    if "signature" not in cp:
        raise RuntimeError(f"no audit signing key at {signing_key_path()}; set MUTUAL_AUDIT_SIGNING_KEY")
    return cp


async def latest_checkpoint() -> dict[str, Any] | None:
    """The stored checkpoint with the highest seq, or None."""
    rows = await raw(f"{_SELECT} ORDER BY seq DESC LIMIT 1")
    return _view(rows[0]) if rows else None


async def checkpoints_covering(first_seq: int, last_seq: int) -> list[dict[str, Any]]:
    """Checkpoints with first_seq <= seq <= last_seq, then the first one after last_seq if any."""
    inside = await raw(f"{_SELECT} WHERE seq >= {{}} AND seq <= {{}} ORDER BY seq", first_seq, last_seq)
    after = await raw(f"{_SELECT} WHERE seq > {{}} ORDER BY seq LIMIT 1", last_seq)
    return [_view(r) for r in (*inside, *after)]


# --- retention ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PruneResult:
    events: int
    """Events deleted."""
    subjects: int
    """audit_subject rows deleted with them."""
    anchor_seq: int | None
    """The signed checkpoint the remaining chain starts from (None when nothing was old enough)."""


async def prune(before: dt.datetime) -> PruneResult:
    """Delete the oldest events (and their subject rows) recorded before `before`, after signing
    (or reusing) a checkpoint at the last one deleted, so the rest of the chain still verifies from it.

    Only a prefix of the chain is deleted; the chain must verify first. Raises RuntimeError otherwise
    or without a signing key."""
    if before.tzinfo is None:
        raise ValueError("prune needs an aware datetime")
    checked = await verify_database()
    if not checked.ok:
        raise RuntimeError(f"the audit chain does not verify (event {checked.first_bad_seq}: {checked.problem}); "
                           "nothing pruned")
    when: Any = _iso(before) if is_sqlite() else before
    async with write_transaction():
        lock = "" if is_sqlite() else " FOR UPDATE"
        await raw(f"SELECT seq FROM audit_head WHERE name = 'main'{lock}")
        bounds = await raw("SELECT MIN(seq) AS first, MAX(seq) AS last FROM audit_event")
        if bounds[0]["first"] is None:
            return PruneResult(0, 0, None)
        newer = await raw('SELECT MIN(seq) AS s FROM audit_event WHERE "at" >= {}', when)
        last = int(newer[0]["s"]) - 1 if newer[0]["s"] is not None else int(bounds[0]["last"])
        if last < int(bounds[0]["first"]):
            return PruneResult(0, 0, None)
        event = await raw('SELECT "hash" FROM audit_event WHERE seq = {}', last)
        cp = await _checkpoint_at(last, event[0]["hash"])
        if cp is None:
            raise RuntimeError(f"no audit signing key at {signing_key_path()}: pruning needs a signed checkpoint")
        if cp["hash"] != event[0]["hash"] or not verify_checkpoint(cp):
            raise RuntimeError(f"the stored checkpoint at event {last} does not verify; nothing pruned")
        subjects = await raw("SELECT COUNT(*) AS n FROM audit_subject WHERE seq <= {}", last)
        events = await raw('SELECT COUNT(*) AS n FROM audit_event WHERE seq <= {} AND "at" < {}', last, when)
        await raw("DELETE FROM audit_subject WHERE seq <= {}", last)
        await raw('DELETE FROM audit_event WHERE seq <= {} AND "at" < {}', last, when)
    return PruneResult(int(events[0]["n"]), int(subjects[0]["n"]), last)
