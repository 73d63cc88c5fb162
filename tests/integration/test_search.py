"""Search over encrypted fields: truncated blind indexes share values, decryption confirms."""

from __future__ import annotations

import pytest

from server import gateway
from server.db import raw
from server.gateway import indexing
from server.vault.blind import name_tokens, normalise_phone
from tests.support import ERIKA, MAX, staff

ADMIN = staff("admin")


def test_name_tokens_fold_case_accents_and_german_umlauts() -> None:
    assert name_tokens("Jürgen", "Müller-Lüdenscheidt") == {"juergen", "mueller", "luedenscheidt"}
    assert name_tokens("MUELLER") == name_tokens("müller") == {"mueller"}
    assert name_tokens("José Ñúñez") == {"jose", "nunez"}


def test_phone_numbers_normalise_to_e164() -> None:
    assert normalise_phone("+49 30 1234567", "DE") == normalise_phone("030/123 45 67", "DE") == "+49301234567"


async def test_with_a_tiny_index_every_value_is_shared_yet_search_returns_only_true_matches(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexing, "bits", lambda field: 1)  # two buckets: half of everyone collides
    erika = await gateway.create_person(ADMIN, purpose="customer_service", values=ERIKA)
    max_ = await gateway.create_person(ADMIN, purpose="customer_service", values=MAX)
    others = [await gateway.create_person(ADMIN, purpose="customer_service",
                                          values={"family_name": f"Beispiel{i}", "email": f"b{i}@example.com",
                                                  "phone": f"+49 40 55501{i:02d}"}) for i in range(12)]
    values = {r["email_index"] for r in await raw("SELECT email_index FROM crm_person")}
    assert len(values) <= 2  # the index alone cannot tell these 14 people apart
    by_email = await gateway.find_people(ADMIN, purpose="customer_service", field="email", query=ERIKA["email"])
    assert [r.id for r in by_email] == [erika]
    by_phone = await gateway.find_people(ADMIN, purpose="customer_service", field="phone", query="089 7654321")
    assert [r.id for r in by_phone] == [max_]
    by_name = await gateway.find_people(ADMIN, purpose="customer_service", field="name", query="Mustermann")
    assert {r.id for r in by_name} == {erika, max_}
    one_other = await gateway.find_people(ADMIN, purpose="customer_service", field="name", query="beispiel3")
    assert [r.id for r in one_other] == [others[3]]


async def test_renaming_a_person_moves_their_name_tokens(db: None) -> None:
    pid = await gateway.create_person(ADMIN, purpose="customer_service", values=ERIKA)
    await gateway.update_person(ADMIN, purpose="customer_service", person_id=pid, changes={"family_name": "Gabler"})
    assert await gateway.find_people(ADMIN, purpose="customer_service", field="name", query="Mustermann") == []
    found = await gateway.find_people(ADMIN, purpose="customer_service", field="name", query="erika gabler")
    assert [r.id for r in found] == [pid]


async def test_index_values_name_their_key_and_hold_no_clear_text(db: None) -> None:
    await gateway.create_person(ADMIN, purpose="customer_service", values=ERIKA)
    rows = await raw("SELECT email_index, phone_index FROM crm_person")
    tokens = await raw("SELECT token_index FROM crm_person_token")
    assert rows[0]["email_index"].startswith("email-1:") and rows[0]["phone_index"].startswith("phone-1:")
    assert len(tokens) == 2 and all(t["token_index"].startswith("name-1:") for t in tokens)
    _, width, value = rows[0]["email_index"].split(":")
    assert int(width) == indexing.bits("email") and len(value) == max(1, (indexing.bits("email") + 3) // 4)
