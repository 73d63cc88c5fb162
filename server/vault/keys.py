"""Key-encryption and blind-index keys, from a key file or the environment, never the database.

A provider is anything with `kek(key_id)`, `active_kek_id` and `index_key(name)`.
A cloud KMS or HashiCorp Vault Transit plugs in as another provider whose `kek`
unwrapping happens remotely; the rest of the vault only sees this interface.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from server.vault.keycheck import KeyError_ as KeyError_
from server.vault.keycheck import length_problem

# Re-exported: key documents as data live in keydoc, callers keep importing them from here.
from server.vault.keydoc import INDEX_NAMES as INDEX_NAMES
from server.vault.keydoc import _b64 as _b64
from server.vault.keydoc import add_index_key as add_index_key
from server.vault.keydoc import add_kek as add_kek
from server.vault.keydoc import new_key_document as new_key_document
from server.vault.keydoc import new_ledger_entry as new_ledger_entry
from server.vault.keydoc import remove_index_keys as remove_index_keys
from server.vault.keydoc import remove_kek as remove_kek

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; key-file changes are then unserialised
    fcntl = None  # type: ignore[assignment]

INLINE_VARIABLE = "MUTUAL_KEYS"
# Seconds between checks of the key file for a rotation made by another process.
FOLLOW_INTERVAL = float(os.environ.get("MUTUAL_KEY_FOLLOW_SECONDS", "1.0"))


class KeyProvider(Protocol):
    @property
    def active_kek_id(self) -> str: ...

    def kek(self, key_id: str) -> bytes: ...

    def index_key(self, name: str) -> tuple[str, bytes]: ...

    def index_key_versions(self, name: str) -> list[tuple[str, bytes]]: ...

    def ledger_key(self) -> tuple[str, bytes]: ...

    def purpose_key(self, name: str, purpose: str) -> tuple[str, bytes]: ...

    def purpose_key_versions(self, name: str, purpose: str) -> list[tuple[str, bytes]]: ...


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the key file is rewritten (a rewrite replaces the file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass(eq=False)
class FileKeyProvider:
    """Keys from a JSON document: {"kek": {"active": id, "keys": {id: b64}}, "index": {...}}.

    A provider read from a key file (`path` set) follows `mutual keys rotate` run by another
    process: asked for a key-encryption key it does not know, it rereads the file once, and it
    notices a new active key-encryption or blind-index key by the file's stat (no read while the
    file is unchanged), so `mutual keys rotate` and `rotate-index` work while the apps serve.
    """

    keks: dict[str, bytes]
    active: str
    index_keys: dict[str, tuple[str, bytes]]
    index_versions: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    """Every key of each blind index, the active one first (lookups during an index rebuild)."""
    derived: frozenset[str] = frozenset()
    """Index key ids that are HKDF roots (one subkey per purpose); older ids serve every purpose as is."""
    path: Path | None = None
    ledger_root: tuple[str, bytes] | None = None
    """Root of the erasure ledger's HMAC subkey; it outlives every key-encryption key."""
    _stamp: tuple[int, int, int] | None = field(default=None, init=False, repr=False)
    _aeads: dict[str, tuple[bytes, Any]] = field(default_factory=dict, init=False, repr=False)
    """AES-GCM objects of the key-encryption keys, built once per key (they live as long as the keys)."""
    _checked_at: float = field(default=float("-inf"), init=False, repr=False)

    def _follow_file(self) -> None:
        """Reload when the key file changed: at most one stat a second, no read while unchanged."""
        if self.path is not None:
            now = time.monotonic()
            if now - self._checked_at < FOLLOW_INTERVAL:
                return
            self._checked_at = now
            stamp = _file_stamp(self.path)
            if stamp != self._stamp:
                try:
                    self._reload()
                except KeyError_:  # a broken file is reported at the next start; keep serving
                    self._stamp = stamp

    @property
    def active_kek_id(self) -> str:
        self._follow_file()
        return self.active

    def kek(self, key_id: str) -> bytes:
        key = self.keks.get(key_id)
        if key is not None:
            return key
        problem = ""
        if self.path is not None:
            try:
                self._reload()
            except KeyError_ as exc:
                problem = f" (rereading it failed: {exc})"
            key = self.keks.get(key_id)
            if key is not None:
                return key
        raise KeyError_(
            f"key-encryption key {key_id!r} is not in the key file{problem}; restore the key file "
            "that was in use when the data was written"
        )

    def kek_aead(self, key_id: str) -> Any:
        """An AESGCM object for `kek(key_id)`, reused while the key file keeps that key unchanged."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self.kek(key_id)
        cached = self._aeads.get(key_id)
        if cached is None or cached[0] != key:
            cached = self._aeads[key_id] = (key, AESGCM(key))
        return cached[1]

    def index_key(self, name: str) -> tuple[str, bytes]:
        self._follow_file()  # `mutual keys rotate-index` may have made a new key active
        try:
            return self.index_keys[name]
        except KeyError:
            raise KeyError_(f"blind-index key {name!r} is missing from the key file") from None

    def index_key_versions(self, name: str) -> list[tuple[str, bytes]]:
        active = self.index_key(name)
        return self.index_versions.get(name) or [active]

    def purpose_key(self, name: str, purpose: str) -> tuple[str, bytes]:
        """The active key of index `name` for one purpose: an HKDF subkey labelled mutual/v1/<name>/<purpose>
        for keys made since subkeys exist, the key itself for older ones (their stored values stay valid)."""
        key_id, key = self.index_key(name)
        return key_id, self._for_purpose(name, purpose, key_id, key)

    def purpose_key_versions(self, name: str, purpose: str) -> list[tuple[str, bytes]]:
        return [(kid, self._for_purpose(name, purpose, kid, key)) for kid, key in self.index_key_versions(name)]

    def _for_purpose(self, name: str, purpose: str, key_id: str, key: bytes) -> bytes:
        from server.vault.subkeys import derive

        return derive(key, f"mutual/v1/{name}/{purpose}".encode()) if key_id in self.derived else key

    def ledger_key(self) -> tuple[str, bytes]:
        """(root id, HKDF subkey) that keys the erasure ledger's hashes of subject ids."""
        from server.vault.subkeys import LEDGER_LABEL, derive

        if self.ledger_root is None and self.path is not None:
            self._reload()
        if self.ledger_root is None:
            raise KeyError_("the key document has no erasure-ledger key (ledger.id/ledger.key); add one with "
                            "`mutual keys add-ledger-key` (older key files lack it)")
        return self.ledger_root[0], derive(self.ledger_root[1], LEDGER_LABEL)

    def _reload(self) -> None:
        """Take the key-encryption keys and the active id from the file as it is now."""
        assert self.path is not None
        stamp = _file_stamp(self.path)
        fresh = FileKeyProvider.from_document(read_key_document(self.path), str(self.path))
        # a thread in between sees the new active id with the old keys, and its kek() reloads again
        self.active = fresh.active
        self.keks = fresh.keks
        self.index_keys, self.index_versions = fresh.index_keys, fresh.index_versions
        self.ledger_root, self.derived = fresh.ledger_root, fresh.derived
        self._stamp = stamp

    @classmethod
    def from_file(cls, path: Path) -> FileKeyProvider:
        """A provider that follows the key file at `path`."""
        stamp = _file_stamp(path)  # before reading: a change in between only costs one more reload
        provider = cls.from_document(read_key_document(path), str(path))
        provider.path, provider._stamp = path, stamp
        return provider

    @classmethod
    def from_document(cls, doc: dict, source: str) -> FileKeyProvider:
        try:
            keks = {kid: _unb64(v) for kid, v in doc["kek"]["keys"].items()}
            active = doc["kek"]["active"]
            index_keys = {}
            index_versions = {}
            derived: set[str] = set()
            for name in INDEX_NAMES:
                entry = doc["index"][name]
                derived.update(str(kid) for kid in entry.get("derived", []))
                index_keys[name] = (entry["active"], _unb64(entry["keys"][entry["active"]]))
                index_versions[name] = [index_keys[name]] + [
                    (kid, _unb64(v)) for kid, v in sorted(entry["keys"].items()) if kid != entry["active"]
                ]
            ledger = doc.get("ledger")
            ledger_root = (ledger["id"], _unb64(ledger["key"])) if ledger is not None else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KeyError_(
                f"{source}: malformed key document (missing or invalid {exc}); "
                "it must hold kek.active, kek.keys and index.<name>.active/keys"
            ) from None
        if active not in keks:
            raise KeyError_(f"{source}: active key-encryption key {active!r} is not among kek.keys")
        problem = length_problem(source, keks, index_versions, ledger_root)
        if problem is not None:
            raise KeyError_(problem)
        return cls(keks=keks, active=active, index_keys=index_keys, index_versions=index_versions,
                   ledger_root=ledger_root, derived=frozenset(derived))


def read_key_document(path: Path) -> dict[str, Any]:
    """The key document in `path`; KeyError_ naming the file when it is missing or not JSON."""
    if not path.exists():
        raise KeyError_(
            f"key file {path} does not exist; restore it from your key backup, or create new "
            "keys with `mutual keys init` (only for a new, empty database), or set MUTUAL_KEY_FILE"
        )
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KeyError_(f"key file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict):
        raise KeyError_(f"key file {path} does not hold a key document (a JSON object)")
    return doc


def write_key_document(path: Path, doc: dict[str, Any]) -> None:
    """Replace the key file atomically: a private temporary file beside it, synced, then renamed.

    A reader (or a crash) sees the old document or the new one, never half of either. A key file
    reached through a symbolic link is rewritten where the link points.
    """
    target = path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def locked_key_file(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file between processes (an flock on its folder).

    Two `mutual keys rotate` runs that both added "kek-2" would otherwise leave one of the two
    keys only in the database's wrapped keys, and those data keys unreadable.
    """
    folder = path.resolve().parent
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def inline_key_document() -> dict[str, Any] | None:
    """The document in MUTUAL_KEYS, which wins over the key file, or None when it is unset."""
    inline = os.environ.get(INLINE_VARIABLE)
    if not inline:
        return None
    try:
        doc = json.loads(inline)
    except json.JSONDecodeError as exc:
        raise KeyError_(f"MUTUAL_KEYS is not valid JSON ({exc.msg}); set it to a key document") from None
    return doc


def ensure_dev_key_file(path: Path) -> bool:
    """Create a development key file when none exists. Returns True when it made one.

    A development key file from an older version gains the index keys it lacks.
    """
    if path.exists():
        with locked_key_file(path):
            doc = read_key_document(path)
            missing = [name for name in INDEX_NAMES if name not in doc.get("index", {})]
            if "ledger" not in doc:
                doc["ledger"] = new_ledger_entry()
                missing.append("erasure ledger")
            if missing:
                fresh = new_key_document()["index"]
                doc.setdefault("index", {}).update({name: fresh[name] for name in missing if name in fresh})
                write_key_document(path, doc)
                print(f"mutual: development key file {path} gained index keys: {', '.join(missing)}",
                      file=sys.stderr)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(new_key_document(), fh, indent=2)
    print(
        "\n" + "!" * 72 + f"\n  DEVELOPMENT KEY FILE CREATED: {path}\n"
        "  It encrypts every personal field. Lose it and the data is gone for good.\n"
        "  For production, create keys with `mutual keys init --file PATH`, keep them\n"
        "  outside the database and its backups, and set MUTUAL_KEY_FILE.\n" + "!" * 72 + "\n",
        file=sys.stderr,
    )
    return True


@functools.cache
def load_key_provider(key_file: Path) -> FileKeyProvider:
    """MUTUAL_KEYS (the JSON document itself) wins over the key file, which is followed when it changes."""
    inline = inline_key_document()
    if inline is not None:
        return FileKeyProvider.from_document(inline, INLINE_VARIABLE)
    return FileKeyProvider.from_file(key_file)
