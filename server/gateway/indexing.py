"""Search indexes of people: truncated blind indexes of email, phone and name tokens."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.blind import (
    index_bits,
    name_tokens,
    normalise_email,
    normalise_phone,
    search_index,
    search_indexes,
)

NAME_FIELDS = ("given_name", "family_name")


def bits() -> int:
    return index_bits(get_settings().expected_people)


def normalised(field: str, value: str) -> str:
    if field == "email":
        return normalise_email(value)
    if field == "phone":
        return normalise_phone(value, get_settings().phone_region)
    raise ValueError(f"{field} has no search index")


def column_indexes(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """email_index / phone_index for the fields present in `values` (None clears)."""
    out: dict[str, str | None] = {}
    for field in ("email", "phone"):
        if field in values:
            value = values[field]
            out[f"{field}_index"] = (search_index(get_kernel().keys, field, normalised(field, value), bits())
                                     if value else None)
    return out


def lookup_values(field: str, value: str) -> list[str]:
    """What to look for in `<field>_index`: one value per key version of the field."""
    return search_indexes(get_kernel().keys, field, normalised(field, value), bits())


def token_rows(person_id: uuid.UUID, names: Mapping[str, str | None]) -> list[tuple[uuid.UUID, str]]:
    """(person, token index) rows for crm_person_token."""
    tokens = name_tokens(*(names.get(f) for f in NAME_FIELDS))
    provider = get_kernel().keys
    return [(person_id, search_index(provider, "name", t, bits())) for t in sorted(tokens)]


def token_lookup(token: str) -> list[str]:
    return search_indexes(get_kernel().keys, "name", token, bits())
