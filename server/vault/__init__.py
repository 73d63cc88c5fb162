"""The vault: key-encryption keys, per-subject data keys, field tokens, blind indexes."""

from server.vault.blind import blind_index, normalise_email
from server.vault.keys import FileKeyProvider, KeyError_, KeyProvider, ensure_dev_key_file, load_key_provider

__all__ = [
    "FileKeyProvider",
    "KeyError_",
    "KeyProvider",
    "blind_index",
    "ensure_dev_key_file",
    "load_key_provider",
    "normalise_email",
]
