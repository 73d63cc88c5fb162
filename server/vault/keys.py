"""Key-encryption and blind-index keys, from a key file or the environment, never the database.

A provider is anything with `kek(key_id)`, `active_kek_id` and `index_key(name)`.
A cloud KMS or HashiCorp Vault Transit plugs in as another provider whose `kek`
unwrapping happens remotely; the rest of the vault only sees this interface.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

INDEX_NAMES = ("email", "ratelimit", "csrf")


class KeyError_(Exception):
    """The keys are missing or unusable; start-up stops with this message."""


class KeyProvider(Protocol):
    @property
    def active_kek_id(self) -> str: ...

    def kek(self, key_id: str) -> bytes: ...

    def index_key(self, name: str) -> tuple[str, bytes]: ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class FileKeyProvider:
    """Keys from a JSON document: {"kek": {"active": id, "keys": {id: b64}}, "index": {...}}."""

    keks: dict[str, bytes]
    active: str
    index_keys: dict[str, tuple[str, bytes]]

    @property
    def active_kek_id(self) -> str:
        return self.active

    def kek(self, key_id: str) -> bytes:
        try:
            return self.keks[key_id]
        except KeyError:
            raise KeyError_(
                f"key-encryption key {key_id!r} is not in the key file; restore the key file "
                "that was in use when the data was written"
            ) from None

    def index_key(self, name: str) -> tuple[str, bytes]:
        try:
            return self.index_keys[name]
        except KeyError:
            raise KeyError_(f"blind-index key {name!r} is missing from the key file") from None

    @classmethod
    def from_document(cls, doc: dict, source: str) -> FileKeyProvider:
        try:
            keks = {kid: _unb64(v) for kid, v in doc["kek"]["keys"].items()}
            active = doc["kek"]["active"]
            index_keys = {}
            for name in INDEX_NAMES:
                entry = doc["index"][name]
                index_keys[name] = (entry["active"], _unb64(entry["keys"][entry["active"]]))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyError_(
                f"{source}: malformed key document (missing or invalid {exc}); "
                "it must hold kek.active, kek.keys and index.<name>.active/keys"
            ) from None
        if active not in keks:
            raise KeyError_(f"{source}: active key-encryption key {active!r} is not among kek.keys")
        for kid, key in keks.items():
            if len(key) != 32:
                raise KeyError_(f"{source}: key-encryption key {kid!r} must be 32 bytes (AES-256)")
        return cls(keks=keks, active=active, index_keys=index_keys)


def new_key_document() -> dict:
    return {
        "kek": {"active": "kek-1", "keys": {"kek-1": _b64(secrets.token_bytes(32))}},
        "index": {
            name: {"active": f"{name}-1", "keys": {f"{name}-1": _b64(secrets.token_bytes(32))}}
            for name in INDEX_NAMES
        },
    }


def ensure_dev_key_file(path: Path) -> bool:
    """Create a development key file when none exists. Returns True when it made one."""
    if path.exists():
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
    """MUTUAL_KEYS (the JSON document itself) wins over the key file."""
    inline = os.environ.get("MUTUAL_KEYS")
    if inline:
        try:
            doc = json.loads(inline)
        except json.JSONDecodeError as exc:
            raise KeyError_(f"MUTUAL_KEYS is not valid JSON ({exc.msg}); set it to a key document") from None
        return FileKeyProvider.from_document(doc, "MUTUAL_KEYS")
    if not key_file.exists():
        raise KeyError_(
            f"key file {key_file} does not exist; restore it from your key backup, or create new "
            "keys with `mutual keys init` (only for a new, empty database), or set MUTUAL_KEY_FILE"
        )
    try:
        doc = json.loads(key_file.read_text())
    except json.JSONDecodeError as exc:
        raise KeyError_(f"key file {key_file} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return FileKeyProvider.from_document(doc, str(key_file))
