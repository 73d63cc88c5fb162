"""Search indexes of people: truncated blind indexes of email, phone and name tokens."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence

from server.db import raw, write_transaction
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.blind import (
    name_tokens,
    normalise_phone,
    search_index,
    search_indexes,
    stored_width,
)
from server.vault.cipher import decrypt_field
from server.vault.email_address import normalise_email
from server.vault.planner import person_index_bits
from server.vault.store import KEY_COLUMNS, key_join, keys_from_rows

NAME_FIELDS = ("given_name", "family_name")


def bits(field: str) -> int:
    """The planned width of one search index (email, phone, name) for `MUTUAL_EXPECTED_PEOPLE`."""
    return person_index_bits(get_settings().expected_people)[field]


def candidate_limit(field: str) -> int:
    """How many candidate rows a search on `field` may confirm: four times the people expected to
    share one index value (the planner keeps that number above its floor, so it can be large), at
    least 200. A fixed small limit would silently drop true matches from a shared bucket."""
    per_row = 2 if field == "name" else 1
    shared = per_row * max(get_settings().expected_people, 1) / 2 ** bits(field)
    return max(200, 4 * math.ceil(shared))


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
            out[f"{field}_index"] = (search_index(get_kernel().keys, field, normalised(field, value), bits(field))
                                     if value else None)
    return out


def lookup_values(field: str, value: str) -> list[str]:
    """What to look for in `<field>_index`: one value per key version and width of the field."""
    return search_indexes(get_kernel().keys, field, normalised(field, value))


def token_rows(person_id: uuid.UUID, names: Mapping[str, str | None],
               fields: Sequence[str] = NAME_FIELDS) -> list[tuple[uuid.UUID, str]]:
    """(row, token index) rows for a token table (crm_person_token) from the name fields given."""
    tokens = name_tokens(*(names.get(f) for f in fields))
    provider = get_kernel().keys
    width = bits("name")
    return [(person_id, search_index(provider, "name", t, width)) for t in sorted(tokens)]


def token_lookup(token: str) -> list[str]:
    return search_indexes(get_kernel().keys, "name", token)


SEARCH_FIELDS = ("email", "phone", "name")


async def rebuild_index(field: str, *, batch: int = 500,
                        progress: Callable[[int], None] | None = None) -> int:
    """Recompute one search index under its active key and planned width, in short transactions.

    Resumable: each pass takes the rows whose values do not yet name the active key and the width
    planned for `MUTUAL_EXPECTED_PEOPLE`, so an interrupted rebuild continues where it stopped.
    Serves both `mutual keys rotate-index` (new key) and `mutual index rebuild` (new widths).
    Returns the number of people re-indexed.
    """
    if field not in SEARCH_FIELDS:
        raise ValueError(f"unknown search index {field!r}; choose one of {', '.join(SEARCH_FIELDS)}")
    provider = get_kernel().keys
    prefix = f"{provider.index_key(field)[0]}:{bits(field)}:"
    done = 0
    while True:
        async with write_transaction():
            if field == "name":
                sql = (f"SELECT p.id, p.given_name, p.family_name, {KEY_COLUMNS} FROM crm_person p {key_join('p')} "
                       "WHERE p.id IN (SELECT DISTINCT person FROM crm_person_token WHERE token_index NOT LIKE {}"
                       f" LIMIT {int(batch)})")
            else:
                sql = (f"SELECT p.id, p.{field}, {KEY_COLUMNS} FROM crm_person p {key_join('p')} "
                       f"WHERE p.{field} IS NOT NULL AND (p.{field}_index IS NULL OR p.{field}_index NOT LIKE {{}}) "
                       f"LIMIT {int(batch)}")
            rows = await raw(sql, prefix + "%")
            if not rows:
                return done
            keys = keys_from_rows(provider, rows)
            for row in rows:
                pid = row["id"] if isinstance(row["id"], uuid.UUID) else uuid.UUID(str(row["id"]))
                dk = keys[pid]
                if field == "name":
                    names = {f: decrypt_field(dk, "crm_person", f, pid, row[f]) if row[f] else None
                             for f in NAME_FIELDS}
                    await raw("DELETE FROM crm_person_token WHERE person = {}", pid)
                    for person, token in token_rows(pid, names):
                        await raw("INSERT INTO crm_person_token (person, token_index) VALUES ({}, {})",
                                  person, token)
                else:
                    plain = decrypt_field(dk, "crm_person", field, pid, row[field])
                    await raw(f"UPDATE crm_person SET {field}_index = {{}} WHERE id = {{}}",
                              column_indexes({field: plain})[f"{field}_index"], pid)
        done += len(rows)
        if progress is not None:
            progress(len(rows))


async def stale_widths() -> dict[str, int]:
    """For each search index: how many stored values have a width other than the planned one
    (they are still found, but keep the bits of another `MUTUAL_EXPECTED_PEOPLE`)."""
    sources = {"email": ("crm_person", "email_index"), "phone": ("crm_person", "phone_index"),
               "name": ("crm_person_token", "token_index")}
    stale: dict[str, int] = {}
    for field, (table, column) in sources.items():
        rows = await raw(f"SELECT {column} AS value FROM {table} WHERE {column} IS NOT NULL")
        planned = bits(field)
        stale[field] = sum(1 for row in rows if stored_width(row["value"]) != planned)
    return stale


async def index_key_usage() -> dict[str, dict[str, int]]:
    """For each search index: how many stored values each key id made (for `mutual keys status`)."""
    usage: dict[str, dict[str, int]] = {}
    sources = {"email": ("crm_person", "email_index"), "phone": ("crm_person", "phone_index"),
               "name": ("crm_person_token", "token_index")}
    for field, (table, column) in sources.items():
        rows = await raw(f"SELECT {column} AS value FROM {table} WHERE {column} IS NOT NULL")
        counts: dict[str, int] = {}
        for row in rows:
            key_id = row["value"].split(":", 1)[0]
            counts[key_id] = counts.get(key_id, 0) + 1
        usage[field] = counts
    return usage
