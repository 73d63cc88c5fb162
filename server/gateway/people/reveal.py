"""Revealing one masked field: a deliberate, audited step that opens a short grant."""

from __future__ import annotations

import datetime as dt
import uuid

from server.actor import Actor
from server.audit.chain import Entry
from server.crm.tables import Person, RevealGrant
from server.db import write_transaction
from server.errors import Invalid, NotFound
from server.gateway.people._common import PERSON, PERSON_FIELDS, _audit, _decide, _denied, _is_uuid, _now, _summary
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.cipher import decrypt_field
from server.vault.store import load_data_keys


async def reveal_field(actor: Actor, *, purpose: str, person_id: uuid.UUID, field: str, reason: str) -> str:
    """One deliberate step for a sensitive field: the reason is required and recorded."""
    if field not in PERSON_FIELDS:
        raise Invalid({"field": f"'{field}' is not a field of a person"})
    if not reason.strip():
        raise Invalid({"reason": "say why you need to see this value; the reason is recorded"})
    decisions = await _decide(actor, "reveal", purpose, PERSON, [field], person_id)
    if decisions[field].effect != "allow":
        raise await _denied(actor, "reveal", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await Person.select(Person.pseudonym, getattr(Person, field)).where(Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        await _audit(actor, Entry(action="reveal", entity=PERSON, purpose=purpose, reason=reason.strip()[:200],
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
        if actor.kind == "staff" and _is_uuid(actor.id):
            staff_id = uuid.UUID(actor.id)
            await RevealGrant.delete().where((RevealGrant.staff_id == staff_id) & (RevealGrant.person == person_id)
                                             & (RevealGrant.field == field))
            await RevealGrant.insert(RevealGrant(
                staff_id=staff_id, person=person_id, field=field,
                expires_at=_now() + dt.timedelta(minutes=get_settings().reveal_minutes)))
        keys = await load_data_keys(get_kernel().keys, [person_id])
    token = rows[0][field]
    if token is None or person_id not in keys:
        return ""
    return decrypt_field(keys[person_id], PERSON, field, person_id, token)
