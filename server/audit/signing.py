"""The audit signing key, the pinned public keys, and signing and checking one checkpoint message."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import logging
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.audit.format import iso
from server.settings import get_settings

MESSAGE_FORMATS = {1: "mutual-audit-checkpoint/1", 2: "mutual-audit-checkpoint/2"}
CHECKPOINT_FORMAT = 2

log = logging.getLogger("mutual.audit")
_warned_missing_key = False
_loaded: dict[Path, tuple[tuple[int, int], Ed25519PrivateKey]] = {}


def signing_key_path() -> Path:
    return get_settings().audit_signing_key_file


def key_id(public_raw: bytes) -> str:
    """The public key's id: the first 16 hex digits of sha256 of its raw 32 bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pin(value: str) -> str:
    """A pinned key as its fingerprint (lower-case hex sha256 of the raw key, 64 digits, or its first 16:
    the key id), from the base64 raw public key, the fingerprint or the key id."""
    text = value.strip()
    if len(text) in (16, 64) and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        raw_key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw_key = b""
    if len(raw_key) != 32:
        raise ValueError(f"audit public key {text[:20]!r} is neither the base64 raw Ed25519 public key (44 "
                         "characters) nor its sha256 fingerprint (64 hex digits) nor its key id (16 hex digits); "
                         "`mutual audit public-key` prints the right value")
    return hashlib.sha256(raw_key).hexdigest()


def pinned_keys() -> frozenset[str] | None:
    """The fingerprints pinned in MUTUAL_AUDIT_PUBLIC_KEY, or None when nothing is pinned."""
    pins = get_settings().audit_public_keys
    return frozenset(pin(p) for p in pins) if pins else None


def is_trusted(public: bytes, pins: Collection[str]) -> bool:
    fingerprint = hashlib.sha256(public).hexdigest()
    return any(fingerprint.startswith(p) for p in pins)


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
    """The id of the key in the signing key file, or None when its file is missing."""
    key = load_signing_key()
    return key_id(public_raw(key)) if key is not None else None


def trust() -> tuple[frozenset[str] | None, str]:
    """The fingerprints checkpoints are checked against, and why the verdict is unanchored ('' when it is
    anchored by pinned keys). Without a pin, the key file's own key is used: that catches a checkpoint
    signed by some other key, but not a key file replaced together with the database."""
    pins = pinned_keys()
    if pins is not None:
        return pins, ""
    own = trusted_key_id()
    return (None if own is None else frozenset({own})), (
        "no audit public key is pinned (set MUTUAL_AUDIT_PUBLIC_KEY to the value `mutual audit public-key` "
        "prints): signatures were checked against the signing key file, which an attacker who rewrites the "
        "database could replace as well")


def checkpoint_message(seq: int, hash: str, at_iso: str, log_id: str = "", version: int = 1) -> bytes:
    """The signed bytes: format line, (format 2: the log id,) seq, hash and instant, one per line."""
    if version == 1:
        return f"{MESSAGE_FORMATS[1]}\n{int(seq)}\n{hash}\n{at_iso}".encode()
    return f"{MESSAGE_FORMATS[version]}\n{log_id}\n{int(seq)}\n{hash}\n{at_iso}".encode()


def sign_checkpoint(key: Ed25519PrivateKey, seq: int, digest: str, at: dt.datetime | str,
                    log_id: str = "") -> dict[str, Any]:
    """A checkpoint in the current format when a log id is given (the old one without)."""
    at_iso = iso(at)
    public = public_raw(key)
    version = CHECKPOINT_FORMAT if log_id else 1
    return {
        "seq": int(seq), "hash": digest, "at": at_iso, "key_id": key_id(public),
        "public_key": base64.b64encode(public).decode(),
        "signature": base64.b64encode(key.sign(checkpoint_message(seq, digest, at_iso, log_id, version))).decode(),
        "format_version": version, "log_id": log_id,
    }


def checkpoint_problem(cp: Mapping[str, Any], trusted_key_ids: Collection[str] | None = None,
                       log_id: str | None = None) -> str:
    """'' when the checkpoint is validly signed (by a trusted key, when those are given; for this log, when
    its id is given), else why not. `trusted_key_ids` holds key ids or full fingerprints."""
    try:
        version = int(cp.get("format_version") or 1)
        public = base64.b64decode(cp["public_key"], validate=True)
        signature = base64.b64decode(cp["signature"], validate=True)
        if key_id(public) != cp["key_id"]:
            return "signature invalid (its key id does not match its public key)"
        message = checkpoint_message(int(cp["seq"]), str(cp["hash"]), iso(cp["at"]), str(cp.get("log_id") or ""),
                                     version)
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError, KeyError):
        return "signature invalid"
    if trusted_key_ids is not None and not is_trusted(public, trusted_key_ids):
        return f"signed by key {cp['key_id']}, which is not a trusted audit signing key"
    if log_id is not None and version >= 2 and cp.get("log_id") != log_id:
        return f"signed for another log ({str(cp.get('log_id'))[:36]}), not this one ({log_id})"
    return ""


def verify_checkpoint(cp: Mapping[str, Any], trusted_key_ids: Collection[str] | None = None) -> bool:
    """True when the checkpoint's signature is valid for its own public key (and that key is trusted)."""
    return not checkpoint_problem(cp, trusted_key_ids)


def checkpoint_marks(rows: Iterable[Mapping[str, Any]], trusted_key_ids: Collection[str] | None = None,
                     log_id: str | None = None) -> dict[int, tuple[str, str]]:
    """Stored checkpoints as the chain verifier takes them: seq -> (hash, problem or '')."""
    return {int(r["seq"]): (r["hash"], checkpoint_problem(r, trusted_key_ids, log_id)) for r in rows}
