"""Verifying the live chain: numbering, links, hashes per format, checkpoints, the head and the witnesses."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from server.audit.format import EVENT_FORMAT_LINE, EVENT_FORMATS, GENESIS, HASHED_FIELDS, SEPARATOR, iso
from server.audit.signing import checkpoint_marks, checkpoint_problem, trust
from server.audit.verify_fast import FAST_COLUMNS, PG_TEXT, SQLITE_TEXT, feed_fast
from server.audit.witness import WitnessError, configured
from server.db import engine, is_sqlite


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    """No event, link, checkpoint or witness contradicts the chain."""
    checked: int
    problem: str = ""
    first_bad_seq: int | None = None
    checkpoints: int = 0
    """Signed checkpoints verified (signature, and the hash of the event they name when it is kept)."""
    unanchored: str = ""
    """Why a consistent chain is not proven to be the one the trusted key signed ('' when it is)."""
    omitted: int = 0
    """Events a filtered export left out but proved by their digests."""
    witnessed: tuple[int, ...] = ()
    """The seqs of the witnessed heads the chain was compared against."""

    @property
    def verdict(self) -> str:
        """INTACT, UNANCHORED (consistent, but nothing ties it to a pinned key) or BROKEN."""
        return "BROKEN" if not self.ok else "UNANCHORED" if self.unanchored else "INTACT"


class ChainVerifier:
    """Checks rows fed in storage order: numbering, links and hashes; then the head.

    A modified event fails its own hash; a deleted one leaves a gap in seq and a broken
    link; an inserted or reordered one breaks the numbering or the link. Feeding rows in
    batches keeps memory bounded however long the chain is.

    `checkpoints` maps the seq of each stored signed checkpoint to (hash, problem): the event
    at that seq must have that hash (a full re-chain after a change is caught here), and a
    problem ("signature invalid") fails verification. A chain whose prefix was pruned starts
    at an "anchor": a validly signed checkpoint at first seq - 1 whose hash the first remaining
    event links to. `witnessed` maps seq -> (hash, witness name): heads kept outside the database,
    which the chain must reach and match.
    """

    def __init__(self, checkpoints: Mapping[int, tuple[str, str]] | None = None, log_id: str = "",
                 witnessed: Mapping[int, tuple[str, str]] | None = None) -> None:
        self.expected_prev, self.expected_seq, self.checked = GENESIS, 1, 0
        self.start, self.version, self.log_id = 1, 1, log_id
        self.marks = dict(checkpoints or {})
        self.witnessed = dict(witnessed or {})
        self.watch = set(self.marks) | set(self.witnessed)
        self.watched_sorted = sorted(self.watch)
        self.anchors = {seq: digest for seq, (digest, problem) in self.marks.items() if not problem}
        self.failure: VerifyResult | None = None

    def feed(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """False once a problem is found (and recorded in `failure`)."""
        return self.feed_tuples(tuple(row.get(c, 1) if c == "format_version" else row[c] for c in _COLUMN_NAMES)
                                for row in rows)

    def feed_tuples(self, rows: Iterable[Sequence[Any]]) -> bool:
        """Rows as tuples in _COLUMNS order (id, prev_hash, hash, seq, at, the rest, format_version)."""
        if self.failure is not None:
            return False
        expected_prev, expected_seq = self.expected_prev, self.expected_seq
        sha256, sep, watch = hashlib.sha256, SEPARATOR, self.watch
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
            if at.__class__ is not str or len(at) != 32:  # inline fast path of iso
                at = iso(at)
            version = row[-1]
            text = sep.join((str(seq), at, *row[5:-1]))
            if version != self.version and not self._version_ok(version, seq, expected_prev, expected_seq):
                return False
            if version == 1:
                digest = sha256(f"{prev}{sep}{text}".encode()).hexdigest()
            else:
                inner = sha256(text.encode()).hexdigest()
                digest = sha256(sep.join((EVENT_FORMAT_LINE, self.log_id, prev, inner)).encode()).hexdigest()
            if digest != row[2]:
                self._advance(expected_prev, expected_seq)
                return self._fail(f"event {seq}: its content does not match its hash (the event was modified)",
                                  seq)
            if watch and seq in watch:
                problem = self._mark_problem(seq, row[2])
                if problem:
                    self._advance(expected_prev, expected_seq)
                    return self._fail(problem, seq)
            expected_prev, expected_seq = row[2], seq + 1
        self._advance(expected_prev, expected_seq)
        return True

    def _version_ok(self, version: Any, seq: int, prev: str, expected_seq: int) -> bool:
        if version not in EVENT_FORMATS:
            self._advance(prev, expected_seq)
            return self._fail(f"event {seq}: unknown format {version!r} (the event was modified)", seq)
        if version < self.version:
            self._advance(prev, expected_seq)
            return self._fail(f"event {seq}: written in format {version} after events of format {self.version} "
                              "(an event was replaced by one hashed the old way)", seq)
        self.version = version
        return True

    def _mark_problem(self, seq: int, digest: str) -> str:
        if seq in self.marks:
            cp_hash, problem = self.marks[seq]
            if problem:
                return f"checkpoint at event {seq}: {problem}"
            if cp_hash != digest:
                return (f"checkpoint at event {seq} does not match the chain: event {seq} was changed after it "
                        "was signed (it or an earlier event was rewritten)")
        if seq in self.witnessed:
            witness_hash, name = self.witnessed[seq]
            if witness_hash != digest:
                return (f"the head witnessed at event {seq} ({name}) does not match the chain: the chain diverges "
                        f"from what was published (event {seq} or an earlier one was rewritten)")
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
        end = last
        if last == 0 and head is not None and int(head["seq"]) > 0 \
                and self.anchors.get(int(head["seq"])) == head["hash"]:
            end = int(head["seq"])  # everything pruned, up to a checkpoint
        elif head is not None and (int(head["seq"]) != last or head["hash"] != self.expected_prev):
            return VerifyResult(False, self.checked, f"chain head says event {head['seq']} but the chain ends at "
                                f"event {last} (events were removed from the end or the head was altered)",
                                min(last, int(head["seq"])) + 1)
        for seq in sorted(s for s in self.witnessed if s > end):
            return VerifyResult(False, self.checked, f"the head witnessed at event {seq} ({self.witnessed[seq][1]}) "
                                f"is beyond the chain's end at event {end} (events were removed from the end and "
                                "the head rewound)", end + 1)
        for seq in sorted(s for s in self.marks if s > end):
            return VerifyResult(False, self.checked, f"checkpoint at event {seq}: the chain ends before it, at "
                                f"event {end} (events were removed from the end)", seq)
        compared = tuple(sorted(s for s in self.witnessed if s >= self.start))  # older ones were pruned
        return VerifyResult(True, self.checked, checkpoints=len(self.marks), witnessed=compared)


def verify_rows(rows: Iterable[Mapping[str, Any]], head: Mapping[str, Any] | None = None,
                log_id: str = "") -> VerifyResult:
    verifier = ChainVerifier(log_id=log_id)
    verifier.feed(rows)
    return verifier.finish(head)


_COLUMN_NAMES = ("id", "prev_hash", "hash", *HASHED_FIELDS, "format_version")
_CHECKPOINT_COLUMNS = "seq, hash, at, key_id, public_key, signature, format_version, log_id"
_COLUMNS = ", ".join(_COLUMN_NAMES)
_HEAD = "SELECT seq, hash, log_id FROM audit_head WHERE name = 'main'"


def _witnessed(trusted: Any, log_id: str) -> tuple[dict[int, tuple[str, str]], str]:
    """The newest head of every configured witness, each checked like a checkpoint; or a problem."""
    found: dict[int, tuple[str, str]] = {}
    for witness in configured():
        try:
            entry = witness.newest()
        except (WitnessError, OSError) as exc:
            return {}, f"witness {witness.name}: {exc}"
        if entry is None:
            continue
        problem = checkpoint_problem(entry, trusted, log_id)
        if problem:
            return {}, f"the newest head in witness {witness.name} (event {entry.get('seq')}): {problem}"
        seq = int(entry["seq"])
        if seq in found and found[seq][0] != entry["hash"]:
            return {}, f"witnesses disagree about event {seq}: {found[seq][1]} and {witness.name}"
        found[seq] = (str(entry["hash"]), witness.name)
    return found, ""


def _anchoring(result: VerifyResult, unanchored: str) -> VerifyResult:
    if result.ok and not unanchored and result.checked and not result.checkpoints and not result.witnessed:
        unanchored = "no signed checkpoint covers the chain yet (run `mutual audit checkpoint`)"
    return dataclasses.replace(result, unanchored=unanchored) if result.ok else result


async def verify_database(batch: int = 20_000) -> VerifyResult:
    """Verify the live chain in insertion order (the storage id, so moved rows show up), in
    batches from one consistent snapshot: memory stays bounded at a million events and more.
    The newest head of each configured witness must be reached and matched."""
    trusted, unanchored = trust()
    if is_sqlite():
        return await anyio.to_thread.run_sync(_verify_sqlite_file, batch, trusted, unanchored)
    async with engine().transaction() as txn:
        conn = txn.connection
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        head = await conn.fetchrow(_HEAD)
        log_id = head["log_id"] if head else ""
        witnessed, problem = await anyio.to_thread.run_sync(_witnessed, trusted, log_id)
        if problem:
            return VerifyResult(False, 0, problem)
        stored = [dict(r) for r in await conn.fetch(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq")]
        verifier = ChainVerifier(checkpoint_marks(stored, trusted, log_id), log_id, witnessed)
        cursor = await conn.cursor(f"SELECT {FAST_COLUMNS}, {PG_TEXT} FROM audit_event ORDER BY id")
        while rows := await cursor.fetch(batch):
            if not feed_fast(verifier, rows):  # re-checked the slow way, from the same snapshot
                full = await conn.fetch(f"SELECT {_COLUMNS} FROM audit_event WHERE id BETWEEN $1 AND $2 ORDER BY id",
                                        rows[0][0], rows[-1][0])
                if not verifier.feed_tuples(full):
                    break
    return _anchoring(verifier.finish(head), unanchored)


def _verify_sqlite_file(batch: int, trusted: Any, unanchored: str) -> VerifyResult:
    """SQLite: one read transaction on a plain connection, values exactly as stored."""
    with contextlib.closing(sqlite3.connect(f"file:{engine().path}?mode=ro"  # type: ignore[attr-defined]
, uri=True)) as conn:
        conn.execute("BEGIN")
        row = conn.execute(_HEAD).fetchone()
        head = {"seq": row[0], "hash": row[1], "log_id": row[2]} if row else None
        log_id = row[2] if row else ""
        witnessed, problem = _witnessed(trusted, log_id)
        if problem:
            return VerifyResult(False, 0, problem)
        names = _CHECKPOINT_COLUMNS.split(", ")
        stored = [dict(zip(names, r)) for r in
                  conn.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq")]
        verifier = ChainVerifier(checkpoint_marks(stored, trusted, log_id), log_id, witnessed)
        cursor = conn.execute(f"SELECT {FAST_COLUMNS}, {SQLITE_TEXT} FROM audit_event ORDER BY id")
        while rows := cursor.fetchmany(batch):
            if not feed_fast(verifier, rows) and not verifier.feed_tuples(conn.execute(
                    f"SELECT {_COLUMNS} FROM audit_event WHERE id BETWEEN ? AND ? ORDER BY id",
                    (rows[0][0], rows[-1][0])).fetchall()):
                break
    return _anchoring(verifier.finish(head), unanchored)
