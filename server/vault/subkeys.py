"""Per-purpose subkeys: HKDF-SHA256 of a root key with a label, so one key never serves two purposes."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LEDGER_LABEL = b"mutual/v1/erasure-ledger/hmac"


def derive(root: bytes, label: bytes, length: int = 32) -> bytes:
    """The subkey of `root` for the purpose `label` (HKDF-SHA256, no salt: the root is uniformly random)."""
    if not label.startswith(b"mutual/"):
        raise ValueError(f"subkey label {label!r} must start with b'mutual/' and name one purpose")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(root)
