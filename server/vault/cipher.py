"""Field tokens: AES-256-GCM under a per-subject data key, bound to table, column, subject and row."""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.timing import phase
from server.vault.keys import KeyProvider

TOKEN_VERSION = 1


class DecryptionFailed(Exception):
    """A token did not decrypt: tampered, copied to another place, or its key is gone."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _pack(key_id: str, nonce: bytes, sealed: bytes) -> str:
    kid = key_id.encode()
    return _b64(bytes([TOKEN_VERSION, len(kid)]) + kid + nonce + sealed)


def _unpack(token: str) -> tuple[str, bytes, bytes]:
    raw = _unb64(token)
    if len(raw) < 2 or raw[0] != TOKEN_VERSION:
        raise DecryptionFailed("unknown token version")
    n = raw[1]
    key_id = raw[2 : 2 + n].decode()
    nonce = raw[2 + n : 14 + n]
    return key_id, nonce, raw[14 + n :]


def token_key_id(token: str) -> str:
    return _unpack(token)[0]


@dataclass(frozen=True)
class DataKey:
    """An unwrapped data key. It lives as long as the request that unwrapped it, and so does its
    AES-GCM object, built once here rather than on every field (no cache outlives the key)."""

    subject_id: uuid.UUID
    key_id: str
    key: bytes
    aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aead", AESGCM(self.key))


@dataclass(frozen=True)
class WrappedKey:
    key_id: str
    kek_id: str
    wrapped: str


def _wrap_aad(subject_id: uuid.UUID, key_id: str) -> bytes:
    return f"mutual.datakey|{subject_id}|{key_id}".encode()


def _kek_aead(provider: KeyProvider, kek_id: str) -> AESGCM:
    """The provider's cached AES-GCM object for a key-encryption key, or a fresh one from a provider
    that keeps none (a KMS-backed provider may not hold the key at all)."""
    cached = getattr(provider, "kek_aead", None)
    return cached(kek_id) if cached is not None else AESGCM(provider.kek(kek_id))


def new_data_key(provider: KeyProvider, subject_id: uuid.UUID) -> tuple[DataKey, WrappedKey]:
    with phase("crypto"):
        key = AESGCM.generate_key(bit_length=256)
        key_id = secrets.token_hex(8)
        kek_id = provider.active_kek_id
        nonce = os.urandom(12)
        sealed = _kek_aead(provider, kek_id).encrypt(nonce, key, _wrap_aad(subject_id, key_id))
        return DataKey(subject_id, key_id, key), WrappedKey(key_id, kek_id, _pack(kek_id, nonce, sealed))


def wrap_data_key(provider: KeyProvider, dk: DataKey) -> WrappedKey:
    """Seal an existing data key under the active KEK (rotation); its key id, named by tokens, stays."""
    with phase("crypto"):
        kek_id = provider.active_kek_id
        nonce = os.urandom(12)
        sealed = _kek_aead(provider, kek_id).encrypt(nonce, dk.key, _wrap_aad(dk.subject_id, dk.key_id))
        return WrappedKey(dk.key_id, kek_id, _pack(kek_id, nonce, sealed))


def unwrap_data_key(provider: KeyProvider, subject_id: uuid.UUID, wrapped: WrappedKey) -> DataKey:
    with phase("crypto"):
        kek_id, nonce, sealed = _unpack(wrapped.wrapped)
        try:
            key = _kek_aead(provider, kek_id).decrypt(nonce, sealed, _wrap_aad(subject_id, wrapped.key_id))
        except InvalidTag:
            raise DecryptionFailed(f"data key of subject {subject_id} did not unwrap") from None
        return DataKey(subject_id, wrapped.key_id, key)


def _field_aad(table: str, column: str, subject_id: uuid.UUID, row_id: uuid.UUID) -> bytes:
    return f"mutual.field|{table}.{column}|{subject_id}|{row_id}".encode()


def encrypt_field(dk: DataKey, table: str, column: str, row_id: uuid.UUID, value: str) -> str:
    with phase("crypto"):
        nonce = os.urandom(12)
        sealed = dk.aead.encrypt(nonce, value.encode(), _field_aad(table, column, dk.subject_id, row_id))
        return _pack(dk.key_id, nonce, sealed)


def decrypt_field(dk: DataKey, table: str, column: str, row_id: uuid.UUID, token: str) -> str:
    with phase("crypto"):
        key_id, nonce, sealed = _unpack(token)
        if key_id != dk.key_id:
            raise DecryptionFailed(f"{table}.{column} token names key {key_id}, not the subject's key")
        try:
            return dk.aead.decrypt(nonce, sealed, _field_aad(table, column, dk.subject_id, row_id)).decode()
        except InvalidTag:
            raise DecryptionFailed(f"{table}.{column} of row {row_id} failed authentication") from None

