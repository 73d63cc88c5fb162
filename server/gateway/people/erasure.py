"""Erasure by crypto-shredding: the ledger first, then key, index entries, notes and row."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

from server.actor import Actor
from server.audit.chain import Entry
from server.crm.tables import Note, Person, PersonToken, RevealGrant
from server.db import write_transaction
from server.errors import NotFound
from server.gateway.people._common import PERSON, PERSON_FIELDS, _audit, _check_write, _decide, _denied, _summary
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.ledger import record_erasure
from server.vault.store import shred_subject_keys


async def erase_person(actor: Actor, *, purpose: str, person_id: uuid.UUID,
                       also: Callable[[uuid.UUID], Awaitable[None]] | None = None) -> None:
    """Crypto-shred a person: the ledger entry first, then key, index entries, notes and row, at once.

    `also` runs in the same transaction (other areas' records of the person, e.g. accounts).
    The audit event keeps only the pseudonym, whose link to the person goes with the row.
    """
    decisions = await _decide(actor, "erase", purpose, PERSON, PERSON_FIELDS, person_id)
    if not _check_write(decisions):
        raise await _denied(actor, "erase", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await Person.select(Person.pseudonym).where(Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased already.")
        await _audit(actor, Entry(action="erase", entity=PERSON, purpose=purpose,
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
        if also is not None:
            await also(person_id)
        record_erasure(get_settings().erasure_ledger, get_kernel().keys, person_id)
        await shred_subjects([person_id])


async def shred_subjects(person_ids: Sequence[uuid.UUID]) -> None:
    """Delete what the vault and the CRM hold of these people (used by erasure and by restore)."""
    async with write_transaction():
        await shred_subject_keys(person_ids)
        await Note.delete().where(Note.person.is_in(list(person_ids)))
        await PersonToken.delete().where(PersonToken.person.is_in(list(person_ids)))
        await RevealGrant.delete().where(RevealGrant.person.is_in(list(person_ids)))
        await Person.delete().where(Person.id.is_in(list(person_ids)))
