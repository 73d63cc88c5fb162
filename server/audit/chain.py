"""The hash chain: append an event under the head lock, and verify a sequence of events."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from server.actor import Actor
from server.audit.tables import AuditEvent, AuditHead, AuditSubject
from server.db import engine, insert_many, is_sqlite, raw, write_transaction

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


def _iso(at: dt.datetime | str) -> str:
    """The instant as hashed: UTC, microseconds, in the text form SQLite stores it (Piccolo's
    adapter writes str(utc_datetime)), so verifying a SQLite chain needs no date parsing."""
    if isinstance(at, str):
        if len(at) == 32:  # "YYYY-MM-DD HH:MM:SS.ffffff+00:00" as stored
            return at
        at = dt.datetime.fromisoformat(at)
    return f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}+00:00"


SEPARATOR = "\x1f"  # ASCII unit separator: never inside a stored value (append strips it)


def event_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """sha256(prev ‖ fields joined by the unit separator): unambiguous and cheap to recompute."""
    parts = [prev_hash, str(row["seq"]), _iso(row["at"])]
    parts.extend(row[k] for k in HASHED_FIELDS[2:])
    return hashlib.sha256(SEPARATOR.join(parts).encode()).hexdigest()


def _clean(value: str) -> str:
    return value.replace(SEPARATOR, " ")


async def ensure_head() -> None:
    async with write_transaction():
        if not await AuditHead.exists().where(AuditHead.name == "main"):
            await AuditHead.insert(
                AuditHead(name="main", seq=0, hash=GENESIS, updated_at=dt.datetime.now(dt.UTC))
            )


def _row(actor: Actor, entry: Entry, policy_version: str, seq: int, at: dt.datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seq": seq,
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


_EVENT_COLUMNS = [*HASHED_FIELDS, "prev_hash", "hash"]


async def append(actor: Actor, entry: Entry, policy_version: str) -> int:
    """Append one event in the caller's transaction (or a new one). Returns its seq."""
    return (await append_many([(actor, entry)], policy_version))[-1]


async def append_many(events: Sequence[tuple[Actor, Entry]], policy_version: str) -> list[int]:
    """Append events in order, in the caller's transaction (or a new one).

    The head row is locked first (FOR UPDATE on PostgreSQL; SQLite's BEGIN
    IMMEDIATE already serialises writers), so concurrent processes never fork.
    """
    async with write_transaction():
        lock = "" if is_sqlite() else " FOR UPDATE"
        heads = await raw(f"SELECT seq, hash FROM audit_head WHERE name = 'main'{lock}")
        if not heads:
            raise RuntimeError("audit head missing: run `mutual migrate` first")
        seq, prev_hash = int(heads[0]["seq"]), heads[0]["hash"]
        now = dt.datetime.now(dt.UTC)
        event_rows: list[Any] = []
        subject_rows: list[Any] = []
        seqs: list[int] = []
        for actor, entry in events:
            seq += 1
            row = _row(actor, entry, policy_version, seq, now)
            digest = event_hash(prev_hash, row)
            event_rows.append((*[row[c] for c in HASHED_FIELDS], prev_hash, digest))
            subject_rows.extend((uuid.UUID(p), seq) for p in sorted(set(entry.subjects)))
            prev_hash = digest
            seqs.append(seq)
        await insert_many(AuditEvent._meta.tablename, _EVENT_COLUMNS, event_rows)
        await insert_many(AuditSubject._meta.tablename, ["pseudonym", "seq"], subject_rows)
        await AuditHead.update(
            {AuditHead.seq: seq, AuditHead.hash: prev_hash, AuditHead.updated_at: now}
        ).where(AuditHead.name == "main")
        if seqs:
            from server.audit.checkpoints import maybe_checkpoint  # it imports this module

            await maybe_checkpoint(seq, prev_hash, now, batch_start=seqs[0])
        return seqs


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    problem: str = ""
    first_bad_seq: int | None = None
    checkpoints: int = 0
    """Signed checkpoints verified (signature, and the hash of the event they name when it is kept)."""


class ChainVerifier:
    """Checks rows fed in storage order: numbering, links and hashes; then the head.

    A modified event fails its own hash; a deleted one leaves a gap in seq and a broken
    link; an inserted or reordered one breaks the numbering or the link. Feeding rows in
    batches keeps memory bounded however long the chain is.

    `checkpoints` maps the seq of each stored signed checkpoint to (hash, problem): the event
    at that seq must have that hash (a full re-chain after a change is caught here), and a
    problem ("signature invalid") fails verification. A chain whose prefix was pruned starts
    at an "anchor": a validly signed checkpoint at first seq - 1 whose hash the first remaining
    event links to.
    """

    def __init__(self, checkpoints: Mapping[int, tuple[str, str]] | None = None) -> None:
        self.expected_prev, self.expected_seq, self.checked = GENESIS, 1, 0
        self.start = 1
        self.marks = dict(checkpoints or {})
        self.anchors = {seq: digest for seq, (digest, problem) in self.marks.items() if not problem}
        self.failure: VerifyResult | None = None

    def feed(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """False once a problem is found (and recorded in `failure`)."""
        return self.feed_tuples(tuple(row[c] for c in _COLUMN_NAMES) for row in rows)

    def feed_tuples(self, rows: Iterable[Sequence[Any]]) -> bool:
        """Rows as tuples in _COLUMNS order (id, prev_hash, hash, seq, at, the rest): the fast path."""
        if self.failure is not None:
            return False
        expected_prev, expected_seq = self.expected_prev, self.expected_seq
        sha256, sep, marks = hashlib.sha256, SEPARATOR, self.marks
        for row in rows:
            seq = int(row[3])
            if seq != expected_seq and expected_seq == 1 and seq > 1:  # the first event kept
                if seq - 1 not in self.anchors:
                    return self._fail(f"event {seq}: the chain starts here, but no validly signed checkpoint at "
                                      f"event {seq - 1} anchors it (events were deleted from the start, or the "
                                      "anchor checkpoint was removed or altered)", seq)
                self.start = expected_seq = seq
                expected_prev = self.anchors[seq - 1]
            if seq != expected_seq:
                self._advance(expected_prev, expected_seq)
                return self._fail(f"event {seq}: expected event {expected_seq} here "
                                  "(an event was deleted, inserted or moved)", seq)
            prev = row[1]
            if prev != expected_prev:
                self._advance(expected_prev, expected_seq)
                return self._fail(f"event {seq}: its link to the previous event is broken "
                                  "(an earlier event was deleted, inserted or reordered)", seq)
            at = row[4]
            if at.__class__ is not str or len(at) != 32:  # inline fast path of _iso
                at = _iso(at)
            text = sep.join((prev, str(seq), at, *row[5:]))
            if sha256(text.encode()).hexdigest() != row[2]:
                self._advance(expected_prev, expected_seq)
                return self._fail(f"event {seq}: its content does not match its hash (the event was modified)",
                                  seq)
            if marks and seq in marks:
                problem = self._mark_problem(seq, row[2])
                if problem:
                    self._advance(expected_prev, expected_seq)
                    return self._fail(problem, seq)
            expected_prev, expected_seq = row[2], seq + 1
        self._advance(expected_prev, expected_seq)
        return True

    def feed_joined(self, rows: Iterable[Sequence[Any]], full_row: Any) -> bool:
        """Rows as (id, seq, prev_hash, hash, hashed text joined by the database)."""
        if self.failure is not None:
            return False
        expected_prev, expected_seq, sha256 = self.expected_prev, self.expected_seq, hashlib.sha256
        marks = self.marks
        for row_id, seq, prev, digest, text in rows:
            if seq != expected_seq or prev != expected_prev or text is None \
                    or sha256(text.encode()).hexdigest() != digest or seq in marks:
                self._advance(expected_prev, expected_seq)
                if not self.feed_tuples([full_row(row_id)]):
                    return False
                expected_prev, expected_seq = self.expected_prev, self.expected_seq
                continue
            expected_prev, expected_seq = digest, seq + 1
        self._advance(expected_prev, expected_seq)
        return True

    def _mark_problem(self, seq: int, digest: str) -> str:
        cp_hash, problem = self.marks[seq]
        if problem:
            return f"checkpoint at event {seq}: {problem}"
        if cp_hash != digest:
            return (f"checkpoint at event {seq} does not match the chain: event {seq} was changed after it "
                    "was signed (it or an earlier event was rewritten)")
        return ""

    def _advance(self, prev: str, seq: int) -> None:
        self.expected_prev, self.expected_seq, self.checked = prev, seq, seq - self.start

    def _fail(self, problem: str, seq: int) -> bool:
        self.failure = VerifyResult(False, self.checked, problem, seq)
        return False

    def finish(self, head: Mapping[str, Any] | None) -> VerifyResult:
        if self.failure is not None:
            return self.failure
        last = self.expected_seq - 1
        for seq in sorted(s for s in self.marks if s < self.start and self.marks[s][1]):  # in a pruned prefix
            return VerifyResult(False, self.checked, f"checkpoint at event {seq}: {self.marks[seq][1]}", seq)
        if last == 0 and head is not None and int(head["seq"]) > 0 \
                and self.anchors.get(int(head["seq"])) == head["hash"]:
            return VerifyResult(True, 0, checkpoints=len(self.marks))  # everything pruned, up to a checkpoint
        if head is not None and (int(head["seq"]) != last or head["hash"] != self.expected_prev):
            return VerifyResult(False, self.checked, f"chain head says event {head['seq']} but the chain ends at "
                                f"event {last} (events were removed from the end or the head was altered)",
                                min(last, int(head["seq"])) + 1)
        for seq in sorted(s for s in self.marks if s > last):
            return VerifyResult(False, self.checked, f"checkpoint at event {seq}: the chain ends before it, at "
                                f"event {last} (events were removed from the end)", seq)
        return VerifyResult(True, self.checked, checkpoints=len(self.marks))


def verify_rows(rows: Iterable[Mapping[str, Any]], head: Mapping[str, Any] | None = None) -> VerifyResult:
    verifier = ChainVerifier()
    verifier.feed(rows)
    return verifier.finish(head)


_COLUMN_NAMES = ("id", "prev_hash", "hash", *HASHED_FIELDS)
_CHECKPOINT_COLUMNS = "seq, hash, at, key_id, public_key, signature"
_COLUMNS = ", ".join(_COLUMN_NAMES)


async def verify_database(batch: int = 20_000) -> VerifyResult:
    """Verify the live chain in insertion order (the storage id, so moved rows show up), in
    batches from one consistent snapshot: memory stays bounded at a million events and more."""
    from server.audit.checkpoints import checkpoint_marks, trusted_key_id

    trusted = trusted_key_id()
    trusted_ids = None if trusted is None else {trusted}
    if is_sqlite():
        return await anyio.to_thread.run_sync(_verify_sqlite_file, batch, trusted_ids)
    async with engine().transaction():
        await raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        heads = await raw("SELECT seq, hash FROM audit_head WHERE name = 'main'")
        stored = await raw(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq")
        verifier, last_id = ChainVerifier(checkpoint_marks(stored, trusted_ids)), 0
        while True:
            rows = await raw(f"SELECT {_COLUMNS} FROM audit_event WHERE id > {{}} ORDER BY id LIMIT {int(batch)}",
                             last_id)
            if not rows or not verifier.feed(rows):
                break
            last_id = rows[-1]["id"]
    return verifier.finish(heads[0] if heads else None)


# SQLite joins the hashed text itself (in C): fetching one string per event instead of fifteen
# values doubles verification speed. Rows whose stored form differs from the canonical one
# (an instant stored without microseconds) are re-checked the slow way before being called bad.
_SQLITE_HASHED_TEXT = " || char(31) || ".join(("prev_hash", *HASHED_FIELDS))


def _verify_sqlite_file(batch: int, trusted_ids: set[str] | None = None) -> VerifyResult:
    """SQLite: one read transaction on a plain connection, values exactly as stored."""
    from server.audit.checkpoints import checkpoint_marks

    with contextlib.closing(sqlite3.connect(f"file:{engine().path}?mode=ro"  # type: ignore[attr-defined]
, uri=True)) as conn:
        conn.execute("BEGIN")
        row = conn.execute("SELECT seq, hash FROM audit_head WHERE name = 'main'").fetchone()
        head = {"seq": row[0], "hash": row[1]} if row else None
        names = _CHECKPOINT_COLUMNS.split(", ")
        stored = [dict(zip(names, r)) for r in
                  conn.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq")]
        verifier = ChainVerifier(checkpoint_marks(stored, trusted_ids))
        cursor = conn.execute(f"SELECT id, seq, prev_hash, hash, {_SQLITE_HASHED_TEXT} FROM audit_event ORDER BY id")

        def full_row(row_id: int) -> tuple[Any, ...]:
            return conn.execute(f"SELECT {_COLUMNS} FROM audit_event WHERE id = ?", (row_id,)).fetchone()

        while rows := cursor.fetchmany(batch):
            if not verifier.feed_joined(rows, full_row):
                break
    return verifier.finish(head)
