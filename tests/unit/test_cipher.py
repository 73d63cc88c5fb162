"""Field tokens, data-key wrapping, key documents and blind indexes behave as the vault promises."""

from __future__ import annotations

import base64
import uuid

import pytest

from server.vault import normalise_email
from server.vault.blind import blind_index
from server.vault.cipher import (
    DataKey,
    DecryptionFailed,
    decrypt_field,
    encrypt_field,
    new_data_key,
    token_key_id,
    unwrap_data_key,
)
from server.vault.keys import FileKeyProvider, KeyError_, new_key_document

TABLE = "crm_person"


def _provider() -> FileKeyProvider:
    return FileKeyProvider.from_document(new_key_document(), "test")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(subject: uuid.UUID | None = None) -> DataKey:
    dk, _ = new_data_key(_provider(), subject or uuid.uuid4())
    return dk


def test_a_field_token_decrypts_back_to_its_value() -> None:
    dk, row = _key(), uuid.uuid4()
    token = encrypt_field(dk, TABLE, "email", row, "erika@example.org")
    assert "erika" not in token
    assert decrypt_field(dk, TABLE, "email", row, token) == "erika@example.org"


def test_a_token_does_not_decrypt_as_another_column() -> None:
    dk, row = _key(), uuid.uuid4()
    token = encrypt_field(dk, TABLE, "email", row, "erika@example.org")
    with pytest.raises(DecryptionFailed):
        decrypt_field(dk, TABLE, "phone", row, token)


def test_a_token_does_not_decrypt_as_another_table() -> None:
    dk, row = _key(), uuid.uuid4()
    token = encrypt_field(dk, TABLE, "email", row, "erika@example.org")
    with pytest.raises(DecryptionFailed):
        decrypt_field(dk, "crm_note", "email", row, token)


def test_a_token_does_not_decrypt_for_another_row() -> None:
    dk = _key()
    token = encrypt_field(dk, TABLE, "email", uuid.uuid4(), "erika@example.org")
    with pytest.raises(DecryptionFailed):
        decrypt_field(dk, TABLE, "email", uuid.uuid4(), token)


def test_a_token_does_not_decrypt_under_another_subjects_key() -> None:
    mine, theirs, row = _key(), _key(), uuid.uuid4()
    token = encrypt_field(mine, TABLE, "email", row, "erika@example.org")
    with pytest.raises(DecryptionFailed):
        decrypt_field(theirs, TABLE, "email", row, token)


def test_a_token_does_not_decrypt_for_another_subject_even_with_the_same_key_material() -> None:
    mine, row = _key(), uuid.uuid4()
    token = encrypt_field(mine, TABLE, "email", row, "erika@example.org")
    impostor = DataKey(subject_id=uuid.uuid4(), key_id=mine.key_id, key=mine.key)
    with pytest.raises(DecryptionFailed):
        decrypt_field(impostor, TABLE, "email", row, token)


def test_a_token_with_one_flipped_ciphertext_byte_fails_authentication() -> None:
    dk, row = _key(), uuid.uuid4()
    token = encrypt_field(dk, TABLE, "email", row, "erika@example.org")
    raw = bytearray(_unb64(token))
    header = 2 + raw[1] + 12  # version, key-id length, key id, nonce
    raw[header + 3] ^= 0x01
    with pytest.raises(DecryptionFailed):
        decrypt_field(dk, TABLE, "email", row, _b64(bytes(raw)))


def test_a_token_names_the_data_key_that_sealed_it() -> None:
    dk = _key()
    token = encrypt_field(dk, TABLE, "email", uuid.uuid4(), "erika@example.org")
    assert token_key_id(token) == dk.key_id


def test_a_wrapped_data_key_unwraps_to_the_same_key() -> None:
    provider, subject = _provider(), uuid.uuid4()
    dk, wrapped = new_data_key(provider, subject)
    assert dk.key not in _unb64(wrapped.wrapped)
    assert wrapped.kek_id == provider.active_kek_id
    assert unwrap_data_key(provider, subject, wrapped) == dk


def test_a_wrapped_data_key_does_not_unwrap_for_another_subject() -> None:
    provider = _provider()
    _, wrapped = new_data_key(provider, uuid.uuid4())
    with pytest.raises(DecryptionFailed):
        unwrap_data_key(provider, uuid.uuid4(), wrapped)


def test_a_wrapped_data_key_does_not_unwrap_under_another_kek_with_the_same_id() -> None:
    subject = uuid.uuid4()
    _, wrapped = new_data_key(_provider(), subject)
    with pytest.raises(DecryptionFailed):
        unwrap_data_key(_provider(), subject, wrapped)


def test_a_kek_missing_from_the_provider_raises_a_key_error_naming_it() -> None:
    with pytest.raises(KeyError_, match="kek-gone"):
        _provider().kek("kek-gone")


def test_unwrapping_a_key_sealed_by_an_unknown_kek_names_that_kek() -> None:
    doc = new_key_document()
    doc["kek"]["keys"]["kek-old"] = doc["kek"]["keys"].pop("kek-1")
    doc["kek"]["active"] = "kek-old"
    subject = uuid.uuid4()
    _, wrapped = new_data_key(FileKeyProvider.from_document(doc, "old"), subject)
    with pytest.raises(KeyError_, match="kek-old"):
        unwrap_data_key(_provider(), subject, wrapped)


def test_a_key_document_with_a_16_byte_kek_is_rejected() -> None:
    doc = new_key_document()
    doc["kek"]["keys"]["kek-1"] = _b64(b"\x01" * 16)
    with pytest.raises(KeyError_, match="32 bytes"):
        FileKeyProvider.from_document(doc, "short.json")


def test_a_key_document_without_a_kek_section_is_rejected() -> None:
    doc = new_key_document()
    del doc["kek"]
    with pytest.raises(KeyError_, match="nokek.json"):
        FileKeyProvider.from_document(doc, "nokek.json")


def test_a_key_document_whose_active_kek_is_absent_is_rejected() -> None:
    doc = new_key_document()
    doc["kek"]["active"] = "kek-9"
    with pytest.raises(KeyError_, match="kek-9"):
        FileKeyProvider.from_document(doc, "inactive.json")


def test_a_blind_index_is_deterministic_for_one_key() -> None:
    provider = _provider()
    first = blind_index(provider, "email", "erika@example.org")
    assert first == blind_index(provider, "email", "erika@example.org")
    assert first != blind_index(provider, "email", "max@example.org")
    assert "erika" not in first


def test_a_blind_index_differs_under_another_key() -> None:
    value = "erika@example.org"
    assert blind_index(_provider(), "email", value) != blind_index(_provider(), "email", value)


def test_a_blind_index_differs_between_index_names() -> None:
    provider = _provider()
    assert blind_index(provider, "email", "x") != blind_index(provider, "csrf", "x")


def test_email_normalisation_ignores_case_and_surrounding_whitespace() -> None:
    provider = _provider()
    plain = blind_index(provider, "email", normalise_email("erika.mustermann@example.org"))
    shouted = blind_index(provider, "email", normalise_email("  Erika.Mustermann@EXAMPLE.org\t"))
    assert shouted == plain
    assert normalise_email("  Erika@Example.ORG ") == "erika@example.org"
