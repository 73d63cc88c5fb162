"""Blind indexes: keyed HMAC-SHA256 of a normalised value, for exact-match lookup."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from server.vault.keys import KeyProvider


def normalise_email(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip().casefold()


def blind_index(provider: KeyProvider, name: str, normalised: str) -> str:
    """Hex HMAC, prefixed by the index key id so a rebuilt index never mixes key versions."""
    key_id, key = provider.index_key(name)
    digest = hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()
    # 32 hex chars (128 bits): exact lookup; issue 4 shortens it by CipherSweet's rule.
    return f"{key_id}:{digest[:32]}"[:64]
