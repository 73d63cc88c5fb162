"""Offline verification of an exported JSON Lines file: every seq accounted for, up to a head signed at export.

The file is: a header (format, log id, first seq), then every event from the first seq to the export's own,
in order, either in full (`event`) or, when a filter left it out, proved by its digest (`omitted`), and an
`end` line with the stored checkpoints in that range and the head signed when the export was made.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from server.audit.format import EVENT_FORMATS, GENESIS, event_hash, link_digest
from server.audit.signing import checkpoint_problem
from server.audit.verify import VerifyResult
from server.audit.witness import last_line

EXPORT_FORMAT = "mutual-audit-export/2"
EXPORT_EVENT_FIELDS = (
    "seq", "at", "request_id", "face", "actor_kind", "actor_id", "role", "action", "entity",
    "subjects", "fields", "purpose", "reason", "policy_version", "outcome", "prev_hash", "hash",
)
NO_PIN = ("no public key was pinned (pass --public-key, or set MUTUAL_AUDIT_PUBLIC_KEY): the file is consistent, "
          "but anyone who rewrote it could have re-signed it with a key of their own")


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            yield number, doc if isinstance(doc, dict) else None


class _Walk:
    """The chain as the file tells it, one seq after the other."""

    def __init__(self, log_id: str, prev: str, seq: int, marks: Mapping[int, tuple[str, str]]) -> None:
        self.log_id, self.prev, self.seq, self.marks = log_id, prev, seq, marks
        self.version, self.checked, self.omitted = 1, 0, 0

    def at(self, seq: int) -> str:
        """'' when `seq` is the next one expected, else what is wrong."""
        if seq > self.seq:
            missing = f"event {self.seq}" if seq == self.seq + 1 else f"events {self.seq}-{seq - 1}"
            return f"{missing} missing from the export (deleted from the file, or left out without proof)"
        if seq < self.seq:
            return f"event {seq}: out of order after event {self.seq - 1} (events were moved or repeated)"
        return ""

    def step(self, version: int, prev: str, digest: str) -> str:
        """Advance past one event with this format and hash; '' or what is wrong with it."""
        seq = self.seq
        if version not in EVENT_FORMATS:
            return f"event {seq}: unknown format {version!r}"
        if version < self.version:
            return f"event {seq}: format {version} after format {self.version} (an event was replaced)"
        if prev != self.prev:
            return (f"event {seq}: its link to the previous event is broken "
                    "(an earlier event was deleted, inserted or modified)")
        if seq in self.marks:
            cp_hash, problem = self.marks[seq]
            if problem:
                return f"checkpoint at event {seq}: {problem}"
            if cp_hash != digest:
                return (f"checkpoint at event {seq} does not match the chain: event {seq} was changed after it "
                        "was signed (it or an earlier event was rewritten)")
        self.version, self.prev, self.seq = version, digest, seq + 1
        return ""

    def event(self, doc: Mapping[str, Any]) -> str:
        row = {k: doc[k] for k in EXPORT_EVENT_FIELDS}
        row["format_version"] = version = int(doc.get("format_version") or 1)
        if not all(isinstance(row[k], str) for k in EXPORT_EVENT_FIELDS if k != "seq"):
            raise TypeError
        if version not in EVENT_FORMATS:
            return f"event {self.seq}: unknown format {version!r}"
        if event_hash(row["prev_hash"], row, self.log_id) != row["hash"]:
            return f"event {self.seq}: its content does not match its hash (the event was modified)"
        self.checked += 1
        return self.step(version, row["prev_hash"], row["hash"])

    def omitted_events(self, items: list[Any]) -> str:
        for item in items:
            if not isinstance(item, list) or not item:
                raise TypeError
            if int(item[0]) == 1:  # an old event: its hash is given, only its link to the next one is checked
                problem = self.step(1, str(item[1]), str(item[2]))
            else:
                problem = self.step(int(item[0]), self.prev, link_digest(self.prev, str(item[1]), self.log_id))
            if problem:
                return problem
            self.omitted += 1
        return ""


def _tail(path: Path) -> tuple[list[Any], dict[str, Any]] | None:
    try:
        tail = json.loads(last_line(path))
    except ValueError:
        return None
    if not isinstance(tail, dict) or tail.get("kind") != "end":
        return None
    checkpoints, head = tail.get("checkpoints"), tail.get("head")
    if not isinstance(checkpoints, list) or not isinstance(head, dict):
        return None
    return checkpoints, head


def verify_export(path: Path, trusted_key_ids: Collection[str] | None = None) -> VerifyResult:
    """Verify an exported file offline; names the first problem. `trusted_key_ids` holds the pinned keys
    (fingerprints or key ids): without them a consistent file is UNANCHORED, never intact."""
    ended = _tail(path)
    if ended is None:
        return VerifyResult(False, 0, "the file does not end with its signed head (it is cut short)")
    checkpoints, head = ended
    walk: _Walk | None = None
    unfiltered = True

    def fail(problem: str, seq: int | None) -> VerifyResult:
        return VerifyResult(False, walk.checked if walk else 0, problem, seq)

    for number, doc in _lines(path):
        if walk is None:
            if number != 1 or doc is None or doc.get("kind") != "header" or doc.get("format") != EXPORT_FORMAT:
                return fail(f"line 1 is not a {EXPORT_FORMAT} header (an older export cannot prove what it left "
                            "out: export again)", None)
            try:
                log_id, first = str(doc["log_id"]), int(doc["first_seq"])
                marks = {int(cp["seq"]): (str(cp["hash"]), checkpoint_problem(cp, trusted_key_ids, log_id))
                         for cp in checkpoints}
                head_seq, head_hash = int(head["seq"]), str(head["hash"])
            except (KeyError, TypeError, ValueError):
                return fail("the header, the checkpoints or the head is malformed", None)
            if "signature" in head:
                head_problem = checkpoint_problem(head, trusted_key_ids, log_id)
                if head_problem:
                    return fail(f"the head signed at export (event {head_seq}): {head_problem}", head_seq)
            if first == 1:
                prev = GENESIS
            elif first - 1 in marks and not marks[first - 1][1]:
                prev = marks[first - 1][0]
            else:
                return fail(f"the export starts at event {first}, but no validly signed checkpoint at event "
                            f"{first - 1} anchors it", first)
            walk = _Walk(log_id, prev, first, marks)
            unfiltered = not doc.get("filters") and not doc.get("person")
            continue
        if doc is None:
            return fail(f"line {number} is not a JSON object (after event {walk.seq - 1})", walk.seq)
        kind = doc.get("kind")
        if kind == "end":
            continue
        try:
            if kind == "event":
                problem = walk.at(int(doc["seq"])) or walk.event(doc)
            elif kind == "omitted" and unfiltered:
                return fail(f"event {doc.get('seq')}: left out of an export that says it has no filter (events "
                            "were replaced by their digests)", walk.seq)
            elif kind == "omitted":
                problem = walk.at(int(doc["seq"])) or walk.omitted_events(doc["events"])
            else:
                return fail(f"line {number}: unknown kind {kind!r}", walk.seq)
        except (KeyError, TypeError, ValueError, IndexError):
            return fail(f"line {number}: a malformed {kind}", walk.seq)
        if problem:
            return fail(problem, walk.seq)
    if walk is None:
        return fail("the file has no header", None)
    last = walk.seq - 1
    if last != head_seq:
        cut = "events were cut from the end" if last < head_seq else "events were added after it"
        return fail(f"the export ends at event {last}, but the head signed at export is event {head_seq} ({cut})",
                    min(last, head_seq) + 1)
    if walk.prev != head_hash:
        return fail(f"event {last} does not match the head signed at export (it or an earlier event was "
                    "rewritten)", last)
    bad = sorted(s for s, (_, problem) in marks.items() if problem)
    if bad:
        return fail(f"checkpoint at event {bad[0]}: {marks[bad[0]][1]}", bad[0])
    unanchored = ("the export's head is not signed (there was no signing key when it was made)"
                  if "signature" not in head else "" if trusted_key_ids is not None else NO_PIN)
    return VerifyResult(True, walk.checked, checkpoints=len(marks), unanchored=unanchored, omitted=walk.omitted)
