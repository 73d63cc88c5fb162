"""The hash chain: append an event under the head lock (verification lives in server.audit.verify)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.actor import Actor
from server.audit.format import EVENT_FORMAT, GENESIS, HASHED_FIELDS, SEPARATOR, event_hash, link, row_text
from server.audit.format import iso as _iso
from server.audit.tables import AuditEvent, AuditHead, AuditSubject
from server.audit.verify import ChainVerifier, VerifyResult, verify_database, verify_rows
from server.db import insert_many, is_sqlite, raw, write_transaction

__all__ = [
    "GENESIS", "HASHED_FIELDS", "ChainVerifier", "Entry", "Head", "VerifyResult", "_iso", "append", "append_many",
    "chain_rows", "ensure_head", "event_hash", "lock_head", "verify_database", "verify_rows",
]


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


def _clean(value: str) -> str:
    return value.replace(SEPARATOR, " ")


async def ensure_head() -> None:
    """The head row, with this log's identity: a random id made once (an older head gets one here)."""
    async with write_transaction():
        if not await AuditHead.exists().where(AuditHead.name == "main"):
            await AuditHead.insert(AuditHead(name="main", seq=0, hash=GENESIS, updated_at=dt.datetime.now(dt.UTC),
                                             log_id=str(uuid.uuid4())))
        await AuditHead.update({AuditHead.log_id: str(uuid.uuid4())}).where(
            (AuditHead.name == "main") & (AuditHead.log_id == ""))


def _row(actor: Actor, entry: Entry, policy_version: str, at: dt.datetime) -> dict[str, Any]:
    """An event's hashed fields, except its seq (assigned when it is chained), cleaned of the separator."""
    row: dict[str, Any] = {
        "at": at,
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
    for key, value in row.items():
        if isinstance(value, str):
            row[key] = _clean(value)
    return row


_EVENT_COLUMNS = [*HASHED_FIELDS, "prev_hash", "hash", "format_version"]


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    log_id: str


async def lock_head() -> Head:
    """The head, locked until the caller's transaction ends (FOR UPDATE on PostgreSQL; SQLite's BEGIN
    IMMEDIATE already serialises writers), so concurrent processes never fork the chain."""
    lock = "" if is_sqlite() else " FOR UPDATE"
    heads = await raw(f"SELECT seq, hash, log_id FROM audit_head WHERE name = 'main'{lock}")
    if not heads or not heads[0]["log_id"]:
        raise RuntimeError("audit head missing or without its log id: run `mutual migrate` first")
    return Head(int(heads[0]["seq"]), heads[0]["hash"], heads[0]["log_id"])


async def chain_rows(head: Head, rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], Head]:
    """In the caller's transaction, after lock_head: number and link `rows` (as `_row` makes them, each
    keeping its own `at`) after `head` in format 2, insert them and their subject rows, move the head and
    sign a checkpoint when one is due. Returns their seqs and the new head."""
    if not rows:
        return [], head
    seq, prev_hash, now = head.seq, head.hash, dt.datetime.now(dt.UTC)
    event_rows: list[Any] = []
    subject_rows: list[Any] = []
    seqs: list[int] = []
    for fields in rows:
        seq += 1
        row = {**fields, "seq": seq}
        digest = link(EVENT_FORMAT, prev_hash, row_text(row), head.log_id)
        event_rows.append((*[row[c] for c in HASHED_FIELDS], prev_hash, digest, EVENT_FORMAT))
        subject_rows.extend((uuid.UUID(p), seq) for p in sorted(set(json.loads(row["subjects"]))))
        prev_hash = digest
        seqs.append(seq)
    await insert_many(AuditEvent._meta.tablename, _EVENT_COLUMNS, event_rows)
    await insert_many(AuditSubject._meta.tablename, ["pseudonym", "seq"], subject_rows)
    await raw("UPDATE audit_head SET seq = {}, hash = {}, updated_at = {} WHERE name = 'main'", seq, prev_hash, now)
    from server.audit.checkpoints import maybe_checkpoint  # it imports this module

    await maybe_checkpoint(seq, prev_hash, now, batch_start=seqs[0], log_id=head.log_id)
    return seqs, Head(seq, prev_hash, head.log_id)


async def append(actor: Actor, entry: Entry, policy_version: str) -> int:
    """Append one event in the caller's transaction (or a new one). Returns its seq."""
    return (await append_many([(actor, entry)], policy_version))[-1]


async def append_many(events: Sequence[tuple[Actor, Entry]], policy_version: str) -> list[int]:
    """Append events in order, in the caller's transaction (or a new one), under the head lock; returns
    their seqs. On PostgreSQL the events recorded but not yet sequenced (audit_pending) are chained first,
    so seq order stays the order in which events were recorded."""
    async with write_transaction():
        head = await lock_head()
        if not is_sqlite():
            from server.audit.sequencer import integrate_locked  # it imports this module

            head = await integrate_locked(head, None)
        now = dt.datetime.now(dt.UTC)
        seqs, _ = await chain_rows(head, [_row(actor, entry, policy_version, now) for actor, entry in events])
        return seqs
