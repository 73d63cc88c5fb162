"""The vault: key-encryption keys, per-subject data keys, field tokens, blind indexes."""

from server.vault.blind import blind_index
from server.vault.email_address import AddressInvalid, canonical_email, mail_address, normalise_email
from server.vault.keys import FileKeyProvider, KeyError_, KeyProvider, ensure_dev_key_file, load_key_provider

__all__ = [
    "AddressInvalid",
    "FileKeyProvider",
    "KeyError_",
    "KeyProvider",
    "blind_index",
    "canonical_email",
    "ensure_dev_key_file",
    "load_key_provider",
    "mail_address",
    "normalise_email",
]
