"""One key, one purpose: HKDF subkeys per purpose for keys made since, old keys and their values still work,
and a short key stops start-up."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.vault.blind import blind_index
from server.vault.cipher import DecryptionFailed, _pack
from server.vault.keys import FileKeyProvider, KeyError_, add_index_key, new_key_document
from server.vault.sealed import open_secret, seal_secret


def _raw(doc: dict, name: str) -> tuple[str, bytes]:
    entry = doc["index"][name]
    text = entry["keys"][entry["active"]]
    return entry["active"], base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _old_document() -> dict:
    """A key document as versions before subkeys wrote it: no `derived` marks, no ledger key."""
    doc = new_key_document()
    for entry in doc["index"].values():
        entry.pop("derived")
    doc.pop("ledger")
    return doc


def test_the_mfa_key_that_seals_totp_secrets_is_not_the_key_that_macs_recovery_codes() -> None:
    doc = new_key_document()
    provider = FileKeyProvider.from_document(doc, "new")
    _, root = _raw(doc, "mfa")
    seal, mac = provider.purpose_key("mfa", "seal")[1], provider.purpose_key("mfa", "recovery-mac")[1]
    assert len({root, seal, mac}) == 3 and len(seal) == len(mac) == 32
    token = seal_secret(provider, "identity_staff_account.totp|a", "JBSWY3DPEHPK3PXP")
    # the key file's mfa key as it is (the MAC key's root) does not open the sealed secret
    root_only = FileKeyProvider(keks={}, active="", index_keys={"mfa": ("mfa-1", root)})
    with pytest.raises(DecryptionFailed):
        open_secret(root_only, "identity_staff_account.totp|a", token)
    assert open_secret(provider, "identity_staff_account.totp|a", token) == "JBSWY3DPEHPK3PXP"


def test_the_signin_key_behind_the_email_index_does_not_hash_oidc_subjects() -> None:
    doc = new_key_document()
    provider = FileKeyProvider.from_document(doc, "new")
    index_key = provider.purpose_key("signin", "blind-index")[1]
    oidc_key = provider.purpose_key("signin", "oidc-subject")[1]
    assert index_key != oidc_key and _raw(doc, "signin")[1] not in (index_key, oidc_key)
    value = "erika.mustermann@example.org"
    raw_hmac = hmac.new(_raw(doc, "signin")[1], value.encode(), hashlib.sha256).hexdigest()[:32]
    assert blind_index(provider, "signin", value).split(":")[1] != raw_hmac


def test_a_key_file_and_values_written_before_subkeys_still_unseal_verify_and_find() -> None:
    doc = _old_document()
    provider = FileKeyProvider.from_document(copy.deepcopy(doc), "old")
    mfa_id, mfa = _raw(doc, "mfa")
    signin_id, signin = _raw(doc, "signin")
    # values as the old code wrote them: the raw key for every purpose
    binding, seed = "identity_staff_account.totp|a", "JBSWY3DPEHPK3PXP"
    nonce = os.urandom(12)
    old_token = _pack(mfa_id, nonce, AESGCM(mfa).encrypt(nonce, seed.encode(), f"mutual.secret|{binding}".encode()))
    old_recovery = hmac.new(mfa, b"recovery|ABCD1234", hashlib.sha256).hexdigest()
    old_index = f"{signin_id}:{hmac.new(signin, b'erika.mustermann@example.org', hashlib.sha256).hexdigest()[:32]}"
    old_subject = hmac.new(signin, b"https://idp.example|sub-1", hashlib.sha256).hexdigest()[:32]

    assert open_secret(provider, binding, old_token) == seed
    assert any(hmac.new(k, b"recovery|ABCD1234", hashlib.sha256).hexdigest() == old_recovery
               for _, k in provider.purpose_key_versions("mfa", "recovery-mac"))
    assert blind_index(provider, "signin", "erika.mustermann@example.org") == old_index
    assert any(hmac.new(k, b"https://idp.example|sub-1", hashlib.sha256).hexdigest()[:32] == old_subject
               for _, k in provider.purpose_key_versions("signin", "oidc-subject"))
    # a key made after the change (rotate-index) is an HKDF root; the old one keeps opening old values
    rotated, new_id = add_index_key(doc, "mfa")
    after = FileKeyProvider.from_document(rotated, "rotated")
    assert new_id in after.derived and mfa_id not in after.derived
    assert after.purpose_key("mfa", "seal")[1] != _raw(rotated, "mfa")[1]
    assert open_secret(after, binding, old_token) == seed


@pytest.mark.parametrize("section", ["kek", "index", "ledger"])
def test_a_truncated_key_stops_start_up_naming_the_key_its_length_and_the_fix(section: str) -> None:
    doc = new_key_document()
    short = base64.urlsafe_b64encode(b"\x01" * 20).decode().rstrip("=")
    if section == "kek":
        doc["kek"]["keys"]["kek-1"], name = short, "kek-1"
    elif section == "index":
        doc["index"]["csrf"]["keys"]["csrf-1"], name = short, "csrf-1"
    else:
        doc["ledger"]["key"], name = short, "ledger-1"
    with pytest.raises(KeyError_) as stopped:
        FileKeyProvider.from_document(doc, "keys.json")
    message = str(stopped.value)
    assert "keys.json" in message and repr(name) in message and "20 bytes" in message
    assert "restore the key file" in message
