"""People and their notes: two descriptions on the generic gateway, and the names the services call."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

from server.actor import Actor
from server.gateway import reads, reveal, search, spec, subjects, writes
from server.gateway.records import Page, Record

PERSON_FIELDS = ("given_name", "family_name", "email", "phone", "address", "birth_date")

PEOPLE = spec.describe(
    "crm_person", fields=PERSON_FIELDS, list_fields=("given_name", "family_name", "email"),
    extra={"organisation": "o.name", "updated_at": "t.updated_at"},
    joins="LEFT JOIN crm_organisation o ON o.id = t.organisation", columns=("organisation",),
    missing="No person with this id; they may have been erased.", reveal=True,
)
NOTES = spec.describe(
    "crm_note", fields=("body",), extra={"author_id": "t.author_id"}, columns=("author_id",),
    page_action="read", missing="No person with this id; they may have been erased.",
)
# A person's portal account is removed by the identity area in the erasure's own transaction (the
# `also` hook crm.service passes) and by restore, together with its sessions and passkeys.
spec.erased_elsewhere("identity_customer_account")


async def person_pseudonym(actor: Actor, person_id: uuid.UUID) -> str:
    return await reads.pseudonym(PEOPLE, actor, person_id)


async def get_person(actor: Actor, *, purpose: str, person_id: uuid.UUID) -> Record:
    return await reads.get(PEOPLE, actor, purpose=purpose, row_id=person_id)


async def get_person_with_notes(actor: Actor, *, purpose: str, person_id: uuid.UUID) -> Record:
    """A person with their latest notes in one step (one audit commit): `extra["included"]["crm_note"]`
    holds the notes, or the PolicyDenied that refused them."""
    return await reads.get(PEOPLE, actor, purpose=purpose, row_id=person_id, include=(NOTES,))


async def list_people(actor: Actor, *, purpose: str, after: str | None = None, limit: int = 25) -> Page:
    return await reads.page(PEOPLE, actor, purpose=purpose, after=after, limit=limit)


async def find_people(actor: Actor, *, purpose: str, field: str, query: str) -> list[Record]:
    return await search.search(PEOPLE, actor, purpose=purpose, field=field, text=query)


async def create_person(actor: Actor, *, purpose: str, values: Mapping[str, str | None],
                        organisation_id: uuid.UUID | None = None) -> uuid.UUID:
    return (await import_people(actor, purpose=purpose, rows=[values], organisation_ids=[organisation_id],
                                action="create"))[0]


async def import_people(actor: Actor, *, purpose: str, rows: Sequence[Mapping[str, str | None]],
                        organisation_ids: Sequence[uuid.UUID | None] | None = None,
                        action: str = "import") -> list[uuid.UUID]:
    """Create many people in one transaction with one audit event naming them all."""
    orgs = list(organisation_ids) if organisation_ids is not None else [None] * len(rows)
    return await writes.create(PEOPLE, actor, purpose=purpose, rows=rows, action=action,
                               columns=[{"organisation": o} for o in orgs])


async def update_person(actor: Actor, *, purpose: str, person_id: uuid.UUID,
                        changes: Mapping[str, str | None]) -> None:
    await writes.update(PEOPLE, actor, purpose=purpose, row_id=person_id, changes=changes)


async def erase_person(actor: Actor, *, purpose: str, person_id: uuid.UUID,
                       also: Callable[[uuid.UUID], Awaitable[None]] | None = None) -> None:
    await subjects.erase(PEOPLE, actor, purpose=purpose, subject_id=person_id, also=also)


async def shred_subjects(person_ids: Sequence[uuid.UUID]) -> None:
    await subjects.shred(PEOPLE.table, person_ids)


async def add_note(actor: Actor, *, purpose: str, person_id: uuid.UUID, body: str) -> uuid.UUID:
    author = uuid.UUID(actor.id) if actor.kind == "staff" and _is_uuid(actor.id) else uuid.UUID(int=0)
    return (await writes.create(NOTES, actor, purpose=purpose, rows=[{"body": body}], subject=person_id,
                                columns=[{"author_id": author}]))[0]


async def list_notes(actor: Actor, *, purpose: str, person_id: uuid.UUID, limit: int = 50) -> list[Record]:
    return await reads.of_subject(NOTES, actor, purpose=purpose, subject_id=person_id, limit=limit)


async def reveal_field(actor: Actor, *, purpose: str, person_id: uuid.UUID, field: str, reason: str,
                       ticket: str = "", note: str = "") -> str:
    return await reveal.reveal(PEOPLE, actor, purpose=purpose, row_id=person_id, field=field, reason=reason,
                               ticket=ticket, note=note)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
