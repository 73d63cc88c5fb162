"""Helpers shared by the integration and face tests."""

from __future__ import annotations

import re
import uuid
from typing import Any

from server.actor import Actor

CSRF_RE = re.compile(r'name="_csrf_token" value="([^"]+)"')


def staff(*roles: str) -> Actor:
    return Actor(kind="staff", id=str(uuid.uuid4()), face="backoffice", roles=frozenset(roles), display="t")


def customer(person_id: uuid.UUID) -> Actor:
    return Actor(kind="customer", id=str(uuid.uuid4()), face="portal", roles=frozenset({"customer"}),
                 person_id=person_id)


ERIKA: dict[str, Any] = {
    "given_name": "Erika", "family_name": "Mustermann", "email": "erika.mustermann@example.org",
    "phone": "+49 30 1234567", "address": "Heidestraße 17, 51147 Köln", "birth_date": "1964-08-12",
}
MAX: dict[str, Any] = {
    "given_name": "Max", "family_name": "Mustermann", "email": "max.mustermann@example.org",
    "phone": "+49 89 7654321", "birth_date": "1962-03-04",
}


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF token field"
    return match.group(1)
