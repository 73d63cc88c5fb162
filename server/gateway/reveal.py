"""Revealing one masked field: a deliberate, audited step that opens a short grant; and the reveal
reasons as the person themself reads them in their access log."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from server.actor import Actor
from server.audit.chain import Entry
from server.db import raw, write_transaction
from server.errors import Invalid, NotFound
from server.gateway import audit, query, reasons
from server.gateway.decide import as_uuid, decide, denied, is_uuid, relations, summary
from server.gateway.reads import subject_keys
from server.gateway.spec import TableSpec
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


async def reveal(spec: TableSpec, actor: Actor, *, purpose: str, row_id: uuid.UUID, field: str, reason: str,
                 ticket: str = "", note: str = "") -> str:
    """One deliberate step for a sensitive field: a reason from the fixed list is required and recorded,
    with an optional ticket reference; an optional note is recorded sealed under the subject's data key,
    so it goes when they are erased (see server.gateway.reasons). A member of staff's reveal opens a
    grant: the field stays shown in full on their reads until it ends."""
    if not spec.reveal or field not in spec.fields:
        raise Invalid({"field": f"'{field[:30]}' is not a field of {spec.table} that can be revealed"})
    given = reasons.check(reason, ticket, note, reveal_reasons())
    rows = await raw(query.select(spec, [field], "t.id = {}"), row_id)
    row = rows[0] if rows else None
    subject = as_uuid(row["subject_id"]) if row else (row_id if spec.is_subject else None)
    decisions = decide(actor, "reveal", purpose, spec.table, [field], subject, relations(actor, row))
    if decisions[field].effect != "allow":
        raise await denied(actor, "reveal", spec.table, purpose, decisions, str(row["pseudonym"]) if row else None)
    keys = subject_keys(rows)
    if row is None or subject is None or subject not in keys:
        raise NotFound(spec.missing)
    async with write_transaction():
        await audit.record(actor, [Entry(action="reveal", entity=spec.table, purpose=purpose,
                                         reason=reasons.seal(given, keys[subject]),
                                         subjects=(str(row["pseudonym"]),), fields=summary(decisions))])
        if actor.kind == "staff" and is_uuid(actor.id):
            staff_id = uuid.UUID(actor.id)
            await raw("DELETE FROM crm_reveal_grant WHERE staff_id = {} AND person = {} AND field = {}",
                      staff_id, subject, field)
            await raw("INSERT INTO crm_reveal_grant (staff_id, person, field, expires_at) VALUES ({}, {}, {}, {})",
                      staff_id, subject, field,
                      dt.datetime.now(dt.UTC) + dt.timedelta(minutes=get_settings().reveal_minutes))
    token = row[field]
    if token is None:
        return ""
    return decrypt_field(keys[subject], spec.table, field, row_id, token)


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
