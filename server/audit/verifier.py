"""The chain verifier itself (no database access): numbering, links, hashes per format, checkpoints and
witnessed heads, for rows fed in storage order. Imported by the verification worker process too."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.audit.format import EVENT_FORMAT_LINE, EVENT_FORMATS, GENESIS, HASHED_FIELDS, SEPARATOR, iso

COLUMN_NAMES = ("id", "prev_hash", "hash", *HASHED_FIELDS, "format_version")
COLUMNS = ", ".join(COLUMN_NAMES)
"""The full row, in the order ChainVerifier.feed_tuples expects."""


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
        return self.feed_tuples(tuple(row.get(c, 1) if c == "format_version" else row[c] for c in COLUMN_NAMES)
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
