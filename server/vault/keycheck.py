"""Key lengths checked on load: a short key would quietly weaken everything it protects."""

from __future__ import annotations


class KeyError_(Exception):
    """The keys are missing or unusable; start-up stops with this message."""


FIX = "restore the key file from your key backup; a truncated copy or a hand-edited key does not work"


def length_problem(source: str, keks: dict[str, bytes], index_versions: dict[str, list[tuple[str, bytes]]],
                   ledger_root: tuple[str, bytes] | None) -> str | None:
    """What is wrong with the keys' lengths (naming the key, its length and the fix), or None."""
    for kid, key in keks.items():
        if len(key) != 32:
            return f"{source}: key-encryption key {kid!r} is {len(key)} bytes but must be 32 bytes (AES-256); {FIX}"
    for name, versions in index_versions.items():
        for kid, key in versions:
            if len(key) < 32:
                return (f"{source}: blind-index key {kid!r} of index {name!r} is {len(key)} bytes but must be at "
                        f"least 32; {FIX}, or make a new one with `mutual keys rotate-index {name}`")
    if ledger_root is not None and len(ledger_root[1]) < 32:
        return (f"{source}: erasure-ledger key {ledger_root[0]!r} is {len(ledger_root[1])} bytes but must be at "
                f"least 32; {FIX}")
    return None
