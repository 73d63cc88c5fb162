"""Writing people: create, import and update, sealing values and keeping their indexes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from server.actor import Actor
from server.audit.chain import Entry
from server.crm.tables import Person, PersonToken
from server.db import insert_many, raw, write_transaction
from server.errors import Invalid, NotFound
from server.gateway import indexing
from server.gateway.people._common import (
    PERSON,
    PERSON_FIELDS,
    _audit,
    _check_write,
    _decide,
    _denied,
    _is_uuid,
    _now,
    _summary,
)
from server.kernel import get_kernel
from server.vault.cipher import DataKey, decrypt_field, encrypt_field
from server.vault.store import create_subject_keys, load_data_keys


def _sealed(dk: DataKey, row_id: uuid.UUID, values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Column name -> token (or None), plus the blind-index columns of the fields present."""
    sealed: dict[str, str | None] = {
        name: None if value in (None, "") else encrypt_field(dk, PERSON, name, row_id, value)
        for name, value in values.items()
    }
    sealed.update(indexing.column_indexes(values))
    return sealed


async def _replace_tokens(person_id: uuid.UUID, names: Mapping[str, str | None]) -> None:
    await raw("DELETE FROM crm_person_token WHERE person = {}", person_id)
    await insert_many(PersonToken._meta.tablename, ["person", "token_index"], indexing.token_rows(person_id, names))


async def create_person(actor: Actor, *, purpose: str, values: Mapping[str, str | None],
                        organisation_id: uuid.UUID | None = None) -> uuid.UUID:
    return (await import_people(actor, purpose=purpose, rows=[values], organisation_ids=[organisation_id],
                                action="create"))[0]


async def import_people(actor: Actor, *, purpose: str, rows: Sequence[Mapping[str, str | None]],
                        organisation_ids: Sequence[uuid.UUID | None] | None = None,
                        action: str = "import") -> list[uuid.UUID]:
    """Create many people in one transaction with one audit event naming them all."""
    fields = sorted({name for row in rows for name in row})
    unknown = set(fields) - set(PERSON_FIELDS)
    if unknown:
        raise Invalid({f: "not a field of a person" for f in sorted(unknown)})
    # What a member of staff creates is theirs and their team's.
    decisions = await _decide(actor, "write", purpose, PERSON, fields, None, frozenset({"assigned", "team"}))
    if not _check_write(decisions):
        raise await _denied(actor, action, PERSON, purpose, decisions)
    orgs = list(organisation_ids) if organisation_ids is not None else [None] * len(rows)
    ids = [uuid.uuid4() for _ in rows]
    pseudonyms = [uuid.uuid4() for _ in rows]
    now = _now()
    async with write_transaction():
        keys = await create_subject_keys(get_kernel().keys, ids)
        owner = uuid.UUID(actor.id) if actor.kind == "staff" and _is_uuid(actor.id) else None
        columns = ["id", "pseudonym", "organisation", "owner_id", "team", "created_at", "updated_at",
                   *PERSON_FIELDS, "email_index", "phone_index"]
        people, tokens = [], []
        for pid, pseudonym, org, values in zip(ids, pseudonyms, orgs, rows):
            sealed = _sealed(keys[pid], pid, values)
            people.append((pid, pseudonym, org, owner, actor.team, now, now,
                           *[sealed.get(c) for c in columns[7:]]))
            tokens.extend(indexing.token_rows(pid, values))
        await insert_many(Person._meta.tablename, columns, people)
        await insert_many(PersonToken._meta.tablename, ["person", "token_index"], tokens)
        await _audit(actor, Entry(action=action, entity=PERSON, purpose=purpose,
                                  subjects=tuple(str(p) for p in pseudonyms), fields=_summary(decisions)))
    return ids


async def update_person(actor: Actor, *, purpose: str, person_id: uuid.UUID,
                        changes: Mapping[str, str | None]) -> None:
    unknown = set(changes) - set(PERSON_FIELDS)
    if unknown:
        raise Invalid({f: "not a field of a person" for f in sorted(unknown)})
    if not changes:
        return
    decisions = await _decide(actor, "write", purpose, PERSON, changes.keys(), person_id)
    if not _check_write(decisions):
        raise await _denied(actor, "update", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await Person.select(Person.pseudonym, *[getattr(Person, f) for f in indexing.NAME_FIELDS]).where(
            Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        keys = await load_data_keys(get_kernel().keys, [person_id])
        if person_id not in keys:
            raise NotFound("This person's data key is gone (erased); nothing can be written.")
        dk = keys[person_id]
        sealed = {getattr(Person, c): v for c, v in _sealed(dk, person_id, changes).items()}
        await Person.update({**sealed, Person.updated_at: _now()}).where(Person.id == person_id)
        if any(f in changes for f in indexing.NAME_FIELDS):
            names = {f: changes[f] if f in changes else
                     (decrypt_field(dk, PERSON, f, person_id, rows[0][f]) if rows[0][f] else None)
                     for f in indexing.NAME_FIELDS}
            await _replace_tokens(person_id, names)
        await _audit(actor, Entry(action="update", entity=PERSON, purpose=purpose,
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
