"""Notes about a person, sealed under the person's data key."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from server.actor import Actor
from server.audit.chain import Entry
from server.crm.tables import Note, Person
from server.db import write_transaction
from server.errors import NotFound
from server.gateway.people._common import (
    NOTE,
    _audit,
    _check_write,
    _decide,
    _denied,
    _is_uuid,
    _now,
    _open,
    _summary,
    _uuid,
    _visible,
)
from server.gateway.records import Record
from server.kernel import get_kernel
from server.vault.cipher import DataKey, encrypt_field
from server.vault.store import load_data_keys


async def add_note(actor: Actor, *, purpose: str, person_id: uuid.UUID, body: str) -> uuid.UUID:
    decisions = await _decide(actor, "write", purpose, NOTE, ["body"], person_id)
    if not _check_write(decisions):
        raise await _denied(actor, "create", NOTE, purpose, decisions, person_id)
    note_id = uuid.uuid4()
    async with write_transaction():
        rows = await Person.select(Person.pseudonym).where(Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        keys = await load_data_keys(get_kernel().keys, [person_id])
        token = encrypt_field(_note_key(keys, person_id), NOTE, "body", note_id, body)
        await Note.insert(Note(id=note_id, person=person_id, author_id=uuid.UUID(actor.id) if _is_uuid(actor.id)
                               else uuid.UUID(int=0), body=token, created_at=_now()))
        await _audit(actor, Entry(action="create", entity=NOTE, purpose=purpose,
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
    return note_id


def _note_key(keys: Mapping[uuid.UUID, DataKey], person_id: uuid.UUID) -> DataKey:
    if person_id not in keys:
        raise NotFound("This person's data key is gone (erased); notes cannot be written or read.")
    return keys[person_id]


async def list_notes(actor: Actor, *, purpose: str, person_id: uuid.UUID, limit: int = 50) -> list[Record]:
    decisions = await _decide(actor, "read", purpose, NOTE, ["body"], person_id)
    if not _visible(decisions):
        raise await _denied(actor, "read", NOTE, purpose, decisions, person_id)
    async with write_transaction():
        person = await Person.select(Person.pseudonym).where(Person.id == person_id)
        if not person:
            raise NotFound("No person with this id; they may have been erased.")
        rows = await Note.select(Note.id, Note.body, Note.author_id, Note.created_at).where(
            Note.person == person_id).order_by(Note.created_at, ascending=False).limit(limit)
        await _audit(actor, Entry(action="read", entity=NOTE, purpose=purpose,
                                  subjects=(str(person[0]["pseudonym"]),), fields=_summary(decisions)))
        keys = await load_data_keys(get_kernel().keys, [person_id])
    records = []
    for row in rows:
        nid = _uuid(row["id"])
        dk = _note_key(keys, person_id)
        records.append(Record(id=nid, values=_open(dk, NOTE, nid, {"body": row["body"]}, decisions),
                              effects={"body": decisions["body"].effect}, created_at=row["created_at"],
                              extra={"author_id": str(row["author_id"])}))
    return records
