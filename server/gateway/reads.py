"""Reading any described table: one record (with reveal grants), a page of records, a pseudonym."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry
from server.db import raw
from server.errors import NotFound, PolicyDenied
from server.gateway import audit, query, scope
from server.gateway.decide import (
    RowDecisions,
    as_uuid,
    decide,
    denial,
    denied,
    is_uuid,
    reach,
    relations,
    summary,
    visible,
)
from server.gateway.records import Page, Record
from server.gateway.spec import TableSpec
from server.kernel import get_kernel
from server.policy import FieldDecision
from server.vault.cipher import DataKey, decrypt_field
from server.vault.store import KEY_COLUMNS, keys_from_rows

CHILD_LIMIT = 50
"""Rows of a child table shown with their subject (a person's latest notes)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def open_values(spec: TableSpec, dk: DataKey | None, row: Mapping[str, Any],
                decisions: Mapping[str, FieldDecision]) -> dict[str, str | None]:
    """The values a row's decisions let through: decrypted, masked where the decision says so."""
    policies = get_kernel().policies
    row_id = as_uuid(row["id"])
    values: dict[str, str | None] = {}
    for name, decision in decisions.items():
        if decision.effect == "deny":
            continue
        token = row.get(name)
        if token is None or dk is None:
            values[name] = None
            continue
        plain = decrypt_field(dk, spec.table, name, row_id, token)
        values[name] = policies.mask(spec.table, name, plain) if decision.effect == "mask" else plain
    return values


def to_record(spec: TableSpec, row: Mapping[str, Any], keys: Mapping[uuid.UUID, DataKey],
              decisions: Mapping[str, FieldDecision]) -> Record:
    extra = {name: str(v) if isinstance(v := row.get(name), uuid.UUID) else v for name in spec.extra}
    return Record(id=as_uuid(row["id"]), values=open_values(spec, keys.get(as_uuid(row["subject_id"])), row, decisions),
                  effects={f: d.effect for f, d in decisions.items()}, created_at=row.get("created_at"), extra=extra)


def subject_keys(rows: Sequence[Mapping[str, Any]]) -> dict[uuid.UUID, DataKey]:
    return keys_from_rows(get_kernel().keys, rows, id_column="subject_id")  # type: ignore[arg-type]


async def pseudonym(spec: TableSpec, actor: Actor, subject_id: uuid.UUID) -> str:
    """The pseudonym audit events use for this subject (no personal data; no event needed)."""
    if actor.kind == "customer" and not actor.is_self(subject_id):
        raise PolicyDenied("Customers can only see their own access log.")
    shape = spec.shape()
    rows = await raw(f"SELECT {shape.pseudonym} AS pseudonym FROM {shape.subject_table} WHERE id = {{}}", subject_id)
    if not rows:
        raise NotFound(spec.missing)
    return str(rows[0]["pseudonym"])


async def get(spec: TableSpec, actor: Actor, *, purpose: str, row_id: uuid.UUID,
              include: Sequence[TableSpec] = ()) -> Record:
    """One record. It is read first and decided from its own subject's relation to the viewer; when it
    is missing the decision is made at no relation, so a refusal is still recorded as one.

    `include` names child tables whose rows of this subject come along (a person's notes), decided at
    the same relation and recorded in the same step: `record.extra["included"][table]` holds their
    records, or the PolicyDenied that refused them (recorded as a denial beside the read)."""
    rows = await raw(query.select(spec, spec.fields, "t.id = {}"), row_id)
    scope.remember(rows)
    row = rows[0] if rows else None
    subject = as_uuid(row["subject_id"]) if row else (row_id if spec.is_subject else None)
    rel = relations(actor, row)
    decisions = decide(actor, "read", purpose, spec.table, spec.fields, subject, rel)
    if not visible(decisions):
        raise await denied(actor, "read", spec.table, purpose, decisions, str(row["pseudonym"]) if row else None)
    if row is None:
        raise NotFound(spec.missing)
    revealed = await _reveal_grants(spec, actor, purpose, subject, decisions, rel) if spec.reveal else {}
    pseudonym = str(row["pseudonym"])
    entries = [Entry(action="read", entity=spec.table, purpose=purpose, subjects=(pseudonym,),
                     fields=summary(decisions))]
    included: dict[str, list[Record] | PolicyDenied] = {}
    opened: list[tuple[TableSpec, list[dict[str, Any]], dict[str, FieldDecision]]] = []
    for child in include:
        allowed = decide(actor, child.page_action, purpose, child.table, child.fields, subject, rel)
        if not visible(allowed):
            entry, included[child.table] = denial(actor, child.page_action, child.table, purpose, allowed, pseudonym)
        else:
            opened.append((child, await raw(query.select(child, visible(allowed), query.subject_condition(child))
                                            + query.newest_first(CHILD_LIMIT), subject), allowed))
            entry = Entry(action=child.page_action, entity=child.table, purpose=purpose, subjects=(pseudonym,),
                          fields=summary(allowed))
        entries.append(entry)
    await audit.record(actor, entries)
    keys = subject_keys(rows)
    record = to_record(spec, row, keys, decisions)
    for child, found, allowed in opened:
        included[child.table] = [to_record(child, r, keys, allowed) for r in found]
    if include:
        record.extra["included"] = included
    if spec.reveal:
        record.extra["revealed_until"] = revealed
    return record


async def _reveal_grants(spec: TableSpec, actor: Actor, purpose: str, subject: uuid.UUID | None,
                         decisions: dict[str, FieldDecision], rel: frozenset[str]) -> dict[str, dt.datetime]:
    """Masked fields this member of staff revealed a short while ago are shown in full until the grant
    ends, as long as the policy still lets them reveal the field; the audit event names the grant."""
    masked = [f for f, d in decisions.items() if d.effect == "mask"]
    if actor.kind != "staff" or not masked or not is_uuid(actor.id) or subject is None:
        return {}
    marks = ", ".join("{}" for _ in masked)
    grants = await raw(f"SELECT field, expires_at FROM crm_reveal_grant WHERE staff_id = {{}} AND person = {{}} "
                       f"AND expires_at > {{}} AND field IN ({marks})", uuid.UUID(actor.id), subject, _now(), *masked)
    if not grants:
        return {}
    still = decide(actor, "reveal", purpose, spec.table, [g["field"] for g in grants], subject, rel)
    revealed = {}
    for grant in grants:
        if still[grant["field"]].effect == "allow":
            decisions[grant["field"]] = FieldDecision("allow", f"reveal-grant by {still[grant['field']].rule}")
            revealed[grant["field"]] = grant["expires_at"]
    return revealed


async def page(spec: TableSpec, actor: Actor, *, purpose: str, after: str | None = None, limit: int = 25) -> Page:
    """Newest first, keyset paged on (created_at, id), in the actor's record scope; one audit event names
    the page's subjects. Each row shows what its own subject's relation to the viewer allows."""
    in_scope, args, found = reach(actor, spec, "read", purpose, spec.shown)
    decider = RowDecisions(actor, "read", purpose, spec.table, spec.shown, found)
    columns = decider.columns()
    if not columns:
        raise await denied(actor, spec.page_action, spec.table, purpose, decider.scope_decisions)
    where = in_scope
    if after:
        at, rid = query.parse_cursor(after)
        where += " AND (t.created_at, t.id) < ({}, {})"
        args = [*args, at, rid]
    rows = await raw(query.select(spec, columns, where) + query.newest_first(limit + 1), *args)
    scope.remember(rows)
    items, more = rows[:limit], len(rows) > limit
    await audit.record(actor, [Entry(action=spec.page_action, entity=spec.table, purpose=purpose,
                                     subjects=tuple(str(r["pseudonym"]) for r in items),
                                     fields=decider.summary(items))])
    keys = subject_keys(items)
    return Page([to_record(spec, r, keys, decider.of(r)) for r in items], query.cursor(items[-1]) if more else None)


async def subject_row(spec: TableSpec, subject_id: uuid.UUID) -> dict[str, Any] | None:
    """The subject's pseudonym, scope columns and wrapped key: from this request's scope, else one query."""
    cached = scope.known(subject_id)
    if cached is not None:
        return cached
    shape = spec.shape()
    rows = await raw(f"SELECT s.id AS subject_id, s.{shape.pseudonym} AS pseudonym"
                     + "".join(f", s.{c} AS rel_{r}" for r, c in shape.scope.items())
                     + f", {KEY_COLUMNS}"
                     + f" FROM {shape.subject_table} s LEFT JOIN vault_subject_key k ON k.subject_id = s.id"
                     + " WHERE s.id = {}", subject_id)
    scope.remember(rows)
    return rows[0] if rows else None


async def of_subject(spec: TableSpec, actor: Actor, *, purpose: str, subject_id: uuid.UUID, action: str = "read",
                     limit: int = 50) -> list[Record]:
    """A subject's rows of a child table (a person's notes), newest first; decided at the subject's
    relation to the viewer, and one event naming the subject even when there are no rows."""
    subject = await subject_row(spec, subject_id)
    decisions = decide(actor, action, purpose, spec.table, spec.fields, subject_id, relations(actor, subject))
    if not visible(decisions):
        named = str(subject["pseudonym"]) if subject else None
        raise await denied(actor, action, spec.table, purpose, decisions, named)
    if subject is None:
        raise NotFound(spec.missing)
    rows = await raw(query.select(spec, visible(decisions), query.subject_condition(spec))
                     + query.newest_first(limit), subject_id)
    await audit.record(actor, [Entry(action=action, entity=spec.table, purpose=purpose,
                                     subjects=(str(subject["pseudonym"]),), fields=summary(decisions))])
    keys = subject_keys(rows)
    return [to_record(spec, r, keys, decisions) for r in rows]
