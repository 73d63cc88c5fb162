"""Whole subjects: erasure by crypto-shredding over every table that names them, and their export."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

from server.actor import Actor
from server.audit.chain import Entry
from server.db import raw, write_transaction
from server.errors import NotFound
from server.gateway import audit, query, scope, spec
from server.gateway.decide import all_allowed, decide, denied, relations, summary, visible
from server.gateway.reads import subject_keys, subject_row, to_record
from server.gateway.records import Record
from server.gateway.spec import TableSpec
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.ledger import record_erasure
from server.vault.store import shred_subject_keys


async def erase(subject_spec: TableSpec, actor: Actor, *, purpose: str, subject_id: uuid.UUID,
                also: Callable[[uuid.UUID], Awaitable[None]] | None = None) -> None:
    """Crypto-shred a subject: the ledger entry first, then key, every linked row and the subject's row.

    `also` runs in the same transaction (other areas' records of the subject, e.g. accounts). The
    audit event keeps only the pseudonym, whose link to the subject goes with the row.
    """
    refusal = None
    async with write_transaction():
        rows = await raw(query.select(subject_spec, [], "t.id = {}"), subject_id)
        row = rows[0] if rows else None
        decisions = decide(actor, "erase", purpose, subject_spec.table, subject_spec.fields, subject_id,
                           relations(actor, row))
        if not all_allowed(decisions):
            refusal = (decisions, str(row["pseudonym"]) if row else None)
        elif row is None:
            raise NotFound(subject_spec.missing)
        else:
            await audit.record(actor, [Entry(action="erase", entity=subject_spec.table, purpose=purpose,
                                             subjects=(str(row["pseudonym"]),), fields=summary(decisions))])
            if also is not None:
                await also(subject_id)
            record_erasure(get_settings().erasure_ledger, get_kernel().keys, subject_id)
            await shred(subject_spec.table, [subject_id])
    if refusal is not None:
        raise await denied(actor, "erase", subject_spec.table, purpose, *refusal)


async def shred(subject_table: str, subject_ids: Sequence[uuid.UUID]) -> None:
    """Delete what the vault holds of these subjects and every row naming them, children first (used by
    erasure and by restore). Which tables name a subject is read from fields.yml (`subject:`)."""
    ids = list(subject_ids)
    if not ids:
        return
    marks = ", ".join("{}" for _ in ids)
    scope.forget(ids)
    async with write_transaction():
        await shred_subject_keys(ids)
        for table, column in spec.cascade(subject_table):
            await raw(f"DELETE FROM {table} WHERE {column} IN ({marks})", *ids)
        await raw(f"DELETE FROM {subject_table} WHERE id IN ({marks})", *ids)


async def export(actor: Actor, *, purpose: str, subject_id: uuid.UUID) -> dict[str, list[Record]]:
    """Every described table's rows of one subject, decided with action "export" (the subject's own
    right of access, or staff on their behalf where policy allows), one event per table exported.
    A table whose fields the actor may export none of is left out (and read not at all)."""
    out: dict[str, list[Record]] = {}
    for table, described in sorted(spec.described().items()):
        if table not in get_kernel().policies.tables:  # described, but not classified by the policy in force
            continue
        decisions = decide(actor, "export", purpose, table, described.fields, subject_id,
                           relations(actor, await subject_row(described, subject_id)))
        shown = visible(decisions)
        if not shown:
            continue
        rows = await raw(query.select(described, shown, query.subject_condition(described))
                         + " ORDER BY t.created_at DESC, t.id DESC", subject_id)
        if not rows:
            continue
        await audit.record(actor, [Entry(action="export", entity=table, purpose=purpose,
                                         subjects=(str(rows[0]["pseudonym"]),), fields=summary(decisions))])
        keys = subject_keys(rows)
        out[table] = [to_record(described, r, keys, decisions) for r in rows]
    return out
