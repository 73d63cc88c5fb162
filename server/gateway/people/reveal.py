"""Revealing one masked field: a deliberate, audited step that opens a short grant; and the reveal
reasons as the person themself reads them in their access log."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from server.actor import Actor
from server.audit.chain import Entry
from server.crm.tables import Person, RevealGrant
from server.db import write_transaction
from server.errors import Invalid, NotFound
from server.gateway import reasons
from server.gateway.people._common import PERSON, PERSON_FIELDS, _audit, _decide, _denied, _is_uuid, _now, _summary
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.cipher import decrypt_field
from server.vault.store import load_data_keys


def reveal_reasons() -> dict[str, str]:
    """The reasons a reveal may give (policies/purposes.yml): id -> English title, in file order."""
    return {r.id: r.title_en for r in get_kernel().policies.reveal_reasons.values()}


def describe_reason(text: str) -> str:
    """A recorded reason as the compliance console shows it (see `reasons.describe`)."""
    return reasons.describe(text, reveal_reasons())


async def reveal_field(actor: Actor, *, purpose: str, person_id: uuid.UUID, field: str, reason: str,
                       ticket: str = "", note: str = "") -> str:
    """One deliberate step for a sensitive field: a reason from the fixed list is required and recorded,
    with an optional ticket reference; an optional note is recorded sealed under the person's data key,
    so it goes when they are erased (see server.gateway.reasons)."""
    if field not in PERSON_FIELDS:
        raise Invalid({"field": f"'{field}' is not a field of a person"})
    given = reasons.check(reason, ticket, note, reveal_reasons())
    decisions = await _decide(actor, "reveal", purpose, PERSON, [field], person_id)
    if decisions[field].effect != "allow":
        raise await _denied(actor, "reveal", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await Person.select(Person.pseudonym, getattr(Person, field)).where(Person.id == person_id)
        keys = await load_data_keys(get_kernel().keys, [person_id])
        if not rows or person_id not in keys:
            raise NotFound("No person with this id; they may have been erased.")
        await _audit(actor, Entry(action="reveal", entity=PERSON, purpose=purpose,
                                  reason=reasons.seal(given, keys[person_id]),
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
        if actor.kind == "staff" and _is_uuid(actor.id):
            staff_id = uuid.UUID(actor.id)
            await RevealGrant.delete().where((RevealGrant.staff_id == staff_id) & (RevealGrant.person == person_id)
                                             & (RevealGrant.field == field))
            await RevealGrant.insert(RevealGrant(
                staff_id=staff_id, person=person_id, field=field,
                expires_at=_now() + dt.timedelta(minutes=get_settings().reveal_minutes)))
    token = rows[0][field]
    if token is None:
        return ""
    return decrypt_field(keys[person_id], PERSON, field, person_id, token)


async def explain_reasons(actor: Actor, *, person_id: uuid.UUID,
                          recorded: Iterable[str]) -> dict[str, reasons.ReasonView]:
    """Recorded reveal reasons (the audit's `reason` texts) as the access log shows them: the reason's
    title and ticket for anyone who may read the log; the note in clear text only for the person
    themself, and only while their data key exists. Texts that are not coded reasons (older free
    text, restore notes) are left out: the caller shows them as recorded.

    Like the access log it belongs to, reading it writes no event: the note was written about this
    person, for them to read, and the reveal that wrote it is the event."""
    known = reveal_reasons()
    parsed = {text: r for text in set(recorded) if (r := reasons.parse(text, known)) is not None}
    keys = {}
    if actor.is_self(person_id) and any(r.note_token for r in parsed.values()):
        keys = await load_data_keys(get_kernel().keys, [person_id])
    return {text: reasons.ReasonView(code=r.code, title=known[r.code], ticket=r.ticket, has_note=bool(r.note_token),
                                     note=reasons.open_note(r, keys.get(person_id), person_id))
            for text, r in parsed.items()}
