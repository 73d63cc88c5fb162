"""Ed25519-signed checkpoints of the audit chain, offline verification of exports, and retention pruning."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.audit.chain import GENESIS, VerifyResult, _iso, event_hash, verify_database
from server.db import is_sqlite, raw, write_transaction
from server.settings import get_settings

CHECKPOINT_EVERY = int(os.environ.get("MUTUAL_AUDIT_CHECKPOINT_EVERY", "1000"))
MESSAGE_FORMAT = "mutual-audit-checkpoint/1"
EXPORT_FORMAT = "mutual-audit-export/1"
CHECKPOINT_FIELDS = ("seq", "hash", "at", "key_id", "public_key", "signature")
EXPORT_EVENT_FIELDS = (
    "seq", "at", "request_id", "face", "actor_kind", "actor_id", "role", "action", "entity",
    "subjects", "fields", "purpose", "reason", "policy_version", "outcome", "prev_hash", "hash",
)

log = logging.getLogger("mutual.audit")
_warned_missing_key = False
_loaded: dict[Path, tuple[tuple[int, int], Ed25519PrivateKey]] = {}


# --- the signing key -------------------------------------------------------------------------

def signing_key_path() -> Path:
    return get_settings().audit_signing_key_file


def key_id(public_raw: bytes) -> str:
    """The public key's id: the first 16 hex digits of sha256 of its raw 32 bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_signing_key(path: Path) -> bool:
    """Create a new Ed25519 key at `path` (PEM PKCS8, mode 0600) unless one exists; True when made.

    Written to a private temporary file beside it, synced, then linked into place, so a reader
    never sees half a key and two processes racing to create it keep the same one.
    """
    target = path.resolve()
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True


def ensure_dev_signing_key(path: Path) -> bool:
    """Development mode: create the audit signing key when none exists. Returns True when it made one."""
    made = write_signing_key(path)
    if made:
        log.warning("development audit signing key created: %s", path)
    return made


def load_signing_key() -> Ed25519PrivateKey | None:
    """The audit signing key, or None (with one warning per process) when its file is missing or unusable:
    appends and reads go on, only checkpoints are skipped."""
    global _warned_missing_key
    path = signing_key_path()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not _warned_missing_key:
            _warned_missing_key = True
            log.warning("audit signing key %s is missing: audit checkpoints are not signed; create one "
                        "with `mutual audit checkpoint` in development mode or set MUTUAL_AUDIT_SIGNING_KEY", path)
        return None
    stamp = (st.st_ino, st.st_mtime_ns)
    cached = _loaded.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        if not _warned_missing_key:
            _warned_missing_key = True
            log.error("audit signing key %s is not a PEM Ed25519 private key: audit checkpoints are not signed",
                      path)
        return None
    _loaded[path] = (stamp, key)
    return key


def trusted_key_id() -> str | None:
    """The id of this installation's signing key, or None when its file is missing."""
    key = load_signing_key()
    return key_id(_public_raw(key)) if key is not None else None


# --- signing and checking one checkpoint --------------------------------------------------------

def checkpoint_message(seq: int, hash: str, at_iso: str) -> bytes:
    """The signed bytes: format line, seq, hash and instant, one per line."""
    return f"{MESSAGE_FORMAT}\n{int(seq)}\n{hash}\n{at_iso}".encode()


def sign_checkpoint(key: Ed25519PrivateKey, seq: int, digest: str, at: dt.datetime | str) -> dict[str, Any]:
    at_iso = _iso(at)
    public = _public_raw(key)
    return {
        "seq": int(seq), "hash": digest, "at": at_iso, "key_id": key_id(public),
        "public_key": base64.b64encode(public).decode(),
        "signature": base64.b64encode(key.sign(checkpoint_message(seq, digest, at_iso))).decode(),
    }


def checkpoint_problem(cp: Mapping[str, Any], trusted_key_ids: Collection[str] | None = None) -> str:
    """'' when the checkpoint is validly signed (by a trusted key, when those are given), else why not."""
    try:
        public = base64.b64decode(cp["public_key"], validate=True)
        signature = base64.b64decode(cp["signature"], validate=True)
        if key_id(public) != cp["key_id"]:
            return "signature invalid (its key id does not match its public key)"
        message = checkpoint_message(int(cp["seq"]), str(cp["hash"]), _iso(cp["at"]))
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError, KeyError):
        return "signature invalid"
    if trusted_key_ids is not None and cp["key_id"] not in trusted_key_ids:
        return f"signed by key {cp['key_id']}, which is not a trusted audit signing key"
    return ""


def verify_checkpoint(cp: Mapping[str, Any], trusted_key_ids: Collection[str] | None = None) -> bool:
    """True when the checkpoint's signature is valid for its own public key (and that key is trusted)."""
    return not checkpoint_problem(cp, trusted_key_ids)


def checkpoint_marks(rows: Iterable[Mapping[str, Any]],
                     trusted_key_ids: Collection[str] | None = None) -> dict[int, tuple[str, str]]:
    """Stored checkpoints as the chain verifier takes them: seq -> (hash, problem or '')."""
    return {int(r["seq"]): (r["hash"], checkpoint_problem(r, trusted_key_ids)) for r in rows}


def _view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"seq": int(row["seq"]), "hash": row["hash"], "at": _iso(row["at"]), "key_id": row["key_id"],
            "public_key": row["public_key"], "signature": row["signature"]}


_SELECT = "SELECT seq, hash, at, key_id, public_key, signature FROM audit_checkpoint"


async def _store(cp: Mapping[str, Any], at: dt.datetime) -> None:
    await raw("INSERT INTO audit_checkpoint (seq, hash, at, key_id, public_key, signature) "
              "VALUES ({}, {}, {}, {}, {}, {})",
              cp["seq"], cp["hash"], at, cp["key_id"], cp["public_key"], cp["signature"])


async def _checkpoint_at(seq: int, digest: str) -> dict[str, Any] | None:
    """Reuse a stored checkpoint at `seq`, or sign and store one; None without a signing key."""
    existing = await raw(f"{_SELECT} WHERE seq = {{}}", seq)
    if existing:
        return _view(existing[0])
    key = load_signing_key()
    if key is None:
        return None
    at = dt.datetime.now(dt.UTC)
    cp = sign_checkpoint(key, seq, digest, at)
    await _store(cp, at)
    return cp


async def maybe_checkpoint(seq: int, digest: str, at: dt.datetime, *, batch_start: int | None = None) -> None:
    """Called by append_many in its transaction: sign the batch's last event when the batch passed
    a multiple of CHECKPOINT_EVERY (events batch_start..seq were just appended)."""
    every = CHECKPOINT_EVERY
    first = seq if batch_start is None else batch_start
    if every <= 0 or seq // every == (first - 1) // every:
        return
    key = load_signing_key()
    if key is None:
        return
    await _store(sign_checkpoint(key, seq, digest, at), at)


async def checkpoint_now() -> dict[str, Any] | None:
    """Sign the chain's current head (or return the checkpoint already there); None for an empty chain.

    Raises RuntimeError when there is no signing key."""
    async with write_transaction():
        lock = "" if is_sqlite() else " FOR UPDATE"
        heads = await raw(f"SELECT seq, hash FROM audit_head WHERE name = 'main'{lock}")
        if not heads or int(heads[0]["seq"]) == 0:
            return None
        cp = await _checkpoint_at(int(heads[0]["seq"]), heads[0]["hash"])
    if cp is None:
        raise RuntimeError(f"no audit signing key at {signing_key_path()}; set MUTUAL_AUDIT_SIGNING_KEY")
    return cp


async def checkpoints_covering(first_seq: int, last_seq: int) -> list[dict[str, Any]]:
    """Checkpoints with first_seq <= seq <= last_seq, then the first one after last_seq if any."""
    inside = await raw(f"{_SELECT} WHERE seq >= {{}} AND seq <= {{}} ORDER BY seq", first_seq, last_seq)
    after = await raw(f"{_SELECT} WHERE seq > {{}} ORDER BY seq LIMIT 1", last_seq)
    return [_view(r) for r in (*inside, *after)]


# --- exported files -----------------------------------------------------------------------------

def _last_line(path: Path, chunk: int = 65536) -> bytes:
    """The file's last non-empty line, read backwards from its end (memory bounded by that line)."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        buf = b""
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            buf = fh.read(end - start) + buf
            end = start
            stripped = buf.rstrip(b"\r\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        return buf.rstrip(b"\r\n")


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


def verify_export(path: Path, trusted_key_ids: Collection[str] | None = None) -> VerifyResult:
    """Verify an exported JSON Lines file offline, line by line: each event's hash, the links between
    consecutive events, and every checkpoint's signature and its event's hash; names the first problem."""
    try:
        tail = json.loads(_last_line(path))
    except ValueError:
        tail = None
    checkpoints = tail.get("checkpoints") if isinstance(tail, dict) and tail.get("kind") == "checkpoints" else None
    if not isinstance(checkpoints, list):
        return VerifyResult(False, 0, "the file does not end with its checkpoints line (it is cut short)")
    marks: dict[int, tuple[str, str]] = {}
    for cp in checkpoints:
        try:
            marks[int(cp["seq"])] = (str(cp["hash"]), checkpoint_problem(cp, trusted_key_ids))
        except (KeyError, TypeError, ValueError):
            return VerifyResult(False, 0, "the checkpoints line holds a malformed checkpoint")
    bad_signatures = sorted(s for s, (_, problem) in marks.items() if problem)
    checked, prev_seq, prev_digest = 0, None, None

    def fail(problem: str, seq: int | None) -> VerifyResult:
        return VerifyResult(False, checked, problem, seq, checkpoints=0)

    for number, doc in _lines(path):
        if number == 1:
            if doc is None or doc.get("kind") != "header" or doc.get("format") != EXPORT_FORMAT:
                return fail(f"line 1 is not a {EXPORT_FORMAT} header", None)
            continue
        if doc is None:
            return fail(f"line {number} is not a JSON object (after event {prev_seq or 0})", (prev_seq or 0) + 1)
        kind = doc.get("kind")
        if kind == "checkpoints":
            continue
        if kind != "event":
            return fail(f"line {number}: unknown kind {kind!r}", (prev_seq or 0) + 1)
        try:
            seq = int(doc["seq"])
            row = {k: doc[k] for k in EXPORT_EVENT_FIELDS}
            if not all(isinstance(row[k], str) for k in EXPORT_EVENT_FIELDS if k != "seq"):
                raise TypeError
            digest = event_hash(row["prev_hash"], row)
        except (KeyError, TypeError, ValueError):
            return fail(f"line {number}: a malformed event", (prev_seq or 0) + 1)
        if bad_signatures and bad_signatures[0] < seq:
            first = bad_signatures[0]
            return fail(f"checkpoint at event {first}: {marks[first][1]}", first)
        if prev_seq is not None and seq <= prev_seq:
            return fail(f"event {seq}: out of order after event {prev_seq} (events were moved)", seq)
        if digest != row["hash"]:
            return fail(f"event {seq}: its content does not match its hash (the event was modified)", seq)
        if prev_seq is not None and seq == prev_seq + 1 and row["prev_hash"] != prev_digest:
            return fail(f"event {seq}: its link to the previous event is broken "
                        "(an earlier event was deleted, inserted or modified)", seq)
        if seq == 1 and row["prev_hash"] != GENESIS:
            return fail("event 1: it does not start from the genesis hash", seq)
        if seq in marks:
            cp_hash, problem = marks[seq]
            if problem:
                return fail(f"checkpoint at event {seq}: {problem}", seq)
            if cp_hash != digest:
                return fail(f"checkpoint at event {seq} does not match the chain: event {seq} was changed "
                            "after it was signed (it or an earlier event was rewritten)", seq)
        checked += 1
        prev_seq, prev_digest = seq, digest
    if bad_signatures:
        first = bad_signatures[0]
        return fail(f"checkpoint at event {first}: {marks[first][1]}", first)
    return VerifyResult(True, checked, checkpoints=len(marks))


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
