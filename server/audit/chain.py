"""The hash chain: append an event under the head lock, and verify a sequence of events."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.actor import Actor
from server.audit.tables import AuditEvent, AuditHead, AuditSubject
from server.db import is_sqlite, raw, write_transaction

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq", "at", "request_id", "face", "actor_kind", "actor_id", "role", "action", "entity",
    "subjects", "fields", "purpose", "reason", "policy_version", "outcome",
)


@dataclass(frozen=True)
class Entry:
    """What happened, without any field value."""

    action: str
    entity: str
    purpose: str
    outcome: str = "ok"
    subjects: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def event_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    body = {k: (_iso(row[k]) if k == "at" else row[k]) for k in HASHED_FIELDS}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


async def ensure_head() -> None:
    async with write_transaction():
        if not await AuditHead.exists().where(AuditHead.name == "main"):
            await AuditHead.insert(
                AuditHead(name="main", seq=0, hash=GENESIS, updated_at=dt.datetime.now(dt.timezone.utc))
            )


async def append(actor: Actor, entry: Entry, policy_version: str) -> int:
    """Append one event in the caller's transaction (or a new one). Returns its seq.

    The head row is locked first (FOR UPDATE on PostgreSQL; SQLite's BEGIN
    IMMEDIATE already serialises writers), so concurrent processes never fork.
    """
    async with write_transaction():
        lock = "" if is_sqlite() else " FOR UPDATE"
        heads = await raw(f"SELECT seq, hash FROM audit_head WHERE name = 'main'{lock}")
        if not heads:
            raise RuntimeError("audit head missing: run `mutual migrate` first")
        prev_seq, prev_hash = int(heads[0]["seq"]), heads[0]["hash"]
        row: dict[str, Any] = {
            "seq": prev_seq + 1,
            "at": dt.datetime.now(dt.timezone.utc),
            "request_id": actor.request_id,
            "face": actor.face,
            "actor_kind": actor.kind,
            "actor_id": actor.id,
            "role": actor.role,
            "action": entry.action,
            "entity": entry.entity,
            "subjects": json.dumps(sorted(entry.subjects)),
            "fields": json.dumps(dict(entry.fields), sort_keys=True),
            "purpose": entry.purpose,
            "reason": entry.reason,
            "policy_version": policy_version,
            "outcome": entry.outcome,
        }
        digest = event_hash(prev_hash, row)
        await AuditEvent.insert(AuditEvent(**row, prev_hash=prev_hash, hash=digest))
        if entry.subjects:
            await AuditSubject.insert(
                *[AuditSubject(pseudonym=p, seq=row["seq"]) for p in sorted(set(entry.subjects))]
            )
        await AuditHead.update(
            {AuditHead.seq: row["seq"], AuditHead.hash: digest, AuditHead.updated_at: row["at"]}
        ).where(AuditHead.name == "main")
        return row["seq"]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    problem: str = ""
    first_bad_seq: int | None = None


def verify_rows(rows: Iterable[Mapping[str, Any]], head: Mapping[str, Any] | None = None) -> VerifyResult:
    """Check rows in storage order (by seq): numbering, links and hashes; then the head.

    A modified event fails its own hash; a deleted one leaves a gap in seq and a
    broken link; an inserted or reordered one breaks the numbering or the link.
    """
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            return VerifyResult(False, checked, f"event {seq}: expected event {expected_seq} here "
                                f"(an event was deleted, inserted or moved)", seq)
        if row["prev_hash"] != expected_prev:
            return VerifyResult(False, checked, f"event {seq}: its link to the previous event is broken "
                                "(an earlier event was deleted, inserted or reordered)", seq)
        if event_hash(row["prev_hash"], row) != row["hash"]:
            return VerifyResult(False, checked, f"event {seq}: its content does not match its hash "
                                "(the event was modified)", seq)
        expected_prev, expected_seq, checked = row["hash"], seq + 1, checked + 1
    if head is not None and (int(head["seq"]) != checked or head["hash"] != expected_prev):
        return VerifyResult(False, checked, f"chain head says event {head['seq']} but the chain ends at "
                            f"event {checked} (events were removed from the end or the head was altered)",
                            min(checked, int(head["seq"])) + 1)
    return VerifyResult(True, checked)


async def verify_database() -> VerifyResult:
    """Verify the live chain in insertion order (the storage id), so moved rows show up."""
    heads = await AuditHead.select().where(AuditHead.name == "main")
    rows = await AuditEvent.select().order_by(AuditEvent.id)
    return verify_rows(rows, heads[0] if heads else None)
