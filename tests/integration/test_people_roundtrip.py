"""A person written through the gateway comes back decrypted, and the database holds only tokens."""

from __future__ import annotations

from server import gateway
from server.db import raw
from tests.support import ERIKA, staff


async def test_a_created_person_reads_back_with_birth_date_masked_for_staff(db: None) -> None:
    admin = staff("admin")
    pid = await gateway.create_person(admin, purpose="customer_service", values=ERIKA)
    person = await gateway.get_person(admin, purpose="customer_service", person_id=pid)
    assert person["family_name"] == "Mustermann"
    assert person["email"] == "erika.mustermann@example.org"
    assert person.is_masked("birth_date") and person["birth_date"] == "1964-••-••"
    assert "Mustermann" not in repr(person)


async def test_the_person_row_holds_no_clear_text(db: None) -> None:
    pid = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    rows = await raw("SELECT * FROM crm_person WHERE id = {}", pid)
    dumped = " ".join(str(v) for v in rows[0].values())
    for value in ERIKA.values():
        assert value not in dumped
