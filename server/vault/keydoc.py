"""Key documents as data: a new one, and copies with a key added or removed (the caller writes them)."""

from __future__ import annotations

import base64
import copy
import re
import secrets
from typing import Any

from server.vault.keycheck import KeyError_

INDEX_NAMES = ("email", "ratelimit", "csrf", "signin", "phone", "name", "mfa")
_KEK_ID = re.compile(r"kek-(\d+)")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def new_key_document() -> dict:
    return {
        "kek": {"active": "kek-1", "keys": {"kek-1": _b64(secrets.token_bytes(32))}},
        "index": {
            name: {"active": f"{name}-1", "keys": {f"{name}-1": _b64(secrets.token_bytes(32))},
                   "derived": [f"{name}-1"]}
            for name in INDEX_NAMES
        },
        "ledger": new_ledger_entry(),
    }


def new_ledger_entry() -> dict[str, str]:
    return {"id": "ledger-1", "key": _b64(secrets.token_bytes(32))}


def add_kek(doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A copy of `doc` with a new random key-encryption key "kek-N", made active; old keys stay."""
    new = copy.deepcopy(doc)
    keys = new["kek"]["keys"]
    used = [*keys, *new["kek"].get("destroyed", [])]  # a destroyed id is never reused
    numbers = [int(m.group(1)) for kid in used if (m := _KEK_ID.fullmatch(kid))]
    n = max(numbers, default=0) + 1
    while f"kek-{n}" in keys:  # pragma: no cover - only if someone named a key "kek-0…" by hand
        n += 1
    key_id = f"kek-{n}"
    keys[key_id] = _b64(secrets.token_bytes(32))
    new["kek"]["active"] = key_id
    return new, key_id


def remove_kek(doc: dict[str, Any], key_id: str) -> dict[str, Any]:
    """A copy of `doc` without `key_id`; the active key and unknown ids are refused."""
    if key_id not in doc["kek"]["keys"]:
        raise KeyError_(f"key-encryption key {key_id!r} is not in the key file")
    if doc["kek"]["active"] == key_id:
        raise KeyError_(f"key-encryption key {key_id!r} is the active key; rotate to a new key first")
    new = copy.deepcopy(doc)
    del new["kek"]["keys"][key_id]
    # Destroyed for good: a restore may then drop data keys still wrapped by it (erased people).
    new["kek"]["destroyed"] = sorted({*new["kek"].get("destroyed", []), key_id})
    return new


def add_index_key(doc: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """A copy of `doc` with a new key for blind index `name` ("<name>-N"), made active."""
    new = copy.deepcopy(doc)
    keys = new["index"][name]["keys"]
    numbers = [int(kid.rsplit("-", 1)[1]) for kid in keys if kid.rsplit("-", 1)[-1].isdigit()]
    key_id = f"{name}-{max(numbers, default=0) + 1}"
    keys[key_id] = _b64(secrets.token_bytes(32))
    new["index"][name]["active"] = key_id
    new["index"][name]["derived"] = [*new["index"][name].get("derived", []), key_id]  # an HKDF root
    return new, key_id


def remove_index_keys(doc: dict[str, Any], name: str, keep: str) -> tuple[dict[str, Any], list[str]]:
    """A copy of `doc` keeping only key `keep` of blind index `name`; returns the removed ids."""
    new = copy.deepcopy(doc)
    removed = [kid for kid in new["index"][name]["keys"] if kid != keep]
    new["index"][name]["keys"] = {keep: new["index"][name]["keys"][keep]}
    new["index"][name]["derived"] = [kid for kid in new["index"][name].get("derived", []) if kid == keep]
    return new, removed
