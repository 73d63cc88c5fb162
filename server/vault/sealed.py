"""Account secrets (TOTP seeds) sealed with AES-GCM under the key file's `mfa` key.

They belong to accounts, not to people, so they are not under a person's data key: erasing a person
does not lock a member of staff out, and the key file alone opens them.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.vault.cipher import DecryptionFailed, _pack, _unpack
from server.vault.keys import KeyProvider


def seal_secret(provider: KeyProvider, binding: str, value: str) -> str:
    """Seal an account secret (a TOTP seed) under the key file's `mfa` key, bound to `binding`
    (table, column and account), so a sealed value copied to another account does not open."""
    key_id, key = provider.purpose_key("mfa", "seal")
    nonce = os.urandom(12)
    return _pack(key_id, nonce, AESGCM(key).encrypt(nonce, value.encode(), f"mutual.secret|{binding}".encode()))


def open_secret(provider: KeyProvider, binding: str, token: str) -> str:
    key_id, nonce, sealed = _unpack(token)
    for kid, key in provider.purpose_key_versions("mfa", "seal"):
        if kid == key_id:
            try:
                return AESGCM(key).decrypt(nonce, sealed, f"mutual.secret|{binding}".encode()).decode()
            except InvalidTag:
                raise DecryptionFailed(f"secret for {binding} failed authentication") from None
    raise DecryptionFailed(f"secret for {binding} names key {key_id}, which the key file no longer holds")
