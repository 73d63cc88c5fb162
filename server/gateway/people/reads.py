"""Reading people: one person (with reveal grants), a page of them, and search through blind indexes."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry
from server.crm.tables import Person, RevealGrant
from server.db import raw, write_transaction
from server.errors import Invalid, NotFound, PolicyDenied
from server.gateway import indexing
from server.gateway.people._common import (
    LIST_FIELDS,
    PERSON,
    PERSON_FIELDS,
    _audit,
    _decide,
    _denied,
    _is_uuid,
    _now,
    _person_query,
    _person_record,
    _reach,
    _relations,
    _summary,
    _uuid,
    _visible,
)
from server.gateway.people.rows import RowDecisions
from server.gateway.records import Page, Record
from server.kernel import get_kernel
from server.policy import FieldDecision
from server.vault.blind import name_tokens
from server.vault.cipher import decrypt_field
from server.vault.store import keys_from_rows


async def person_pseudonym(actor: Actor, person_id: uuid.UUID) -> str:
    """The pseudonym audit events use for this person (no personal data; no event needed)."""
    if actor.kind == "customer" and not actor.is_self(person_id):
        raise PolicyDenied("Customers can only see their own access log.")
    rows = await Person.select(Person.pseudonym).where(Person.id == person_id)
    if not rows:
        raise NotFound("No person with this id; they may have been erased.")
    return str(rows[0]["pseudonym"])


async def get_person(actor: Actor, *, purpose: str, person_id: uuid.UUID) -> Record:
    relations = await _relations(actor, person_id)
    decisions = await _decide(actor, "read", purpose, PERSON, PERSON_FIELDS, person_id, relations)
    visible = _visible(decisions)
    if not visible:
        raise await _denied(actor, "read", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await raw(_person_query(visible, "p.id = {}"), person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        row = rows[0]
        revealed = await _apply_reveal_grants(actor, purpose, person_id, decisions, relations)
        await _audit(actor, Entry(action="read", entity=PERSON, purpose=purpose,
                                  subjects=(str(row["pseudonym"]),), fields=_summary(decisions)))
    record = _person_record(row, keys_from_rows(get_kernel().keys, rows), decisions)
    record.extra["revealed_until"] = revealed
    return record


async def _apply_reveal_grants(actor: Actor, purpose: str, person_id: uuid.UUID,
                               decisions: dict[str, FieldDecision],
                               relations: frozenset[str]) -> dict[str, dt.datetime]:
    """Masked fields this member of staff revealed a short while ago are shown in full until the grant
    ends, as long as the policy still lets them reveal the field; the audit event names the grant."""
    masked = [f for f, d in decisions.items() if d.effect == "mask"]
    if actor.kind != "staff" or not masked or not _is_uuid(actor.id):
        return {}
    grants = await RevealGrant.select(RevealGrant.field, RevealGrant.expires_at).where(
        (RevealGrant.staff_id == uuid.UUID(actor.id)) & (RevealGrant.person == person_id)
        & (RevealGrant.expires_at > _now()) & RevealGrant.field.is_in(masked))
    if not grants:
        return {}
    still = await _decide(actor, "reveal", purpose, PERSON, [g["field"] for g in grants], person_id, relations)
    revealed = {}
    for grant in grants:
        if still[grant["field"]].effect == "allow":
            decisions[grant["field"]] = FieldDecision("allow", f"reveal-grant by {still[grant['field']].rule}")
            revealed[grant["field"]] = grant["expires_at"]
    return revealed


def _cursor(row: Mapping[str, Any]) -> str:
    return f"{row['created_at'].astimezone(dt.UTC).isoformat()}|{row['id']}"


def _parse_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        at, rid = cursor.split("|", 1)
        return dt.datetime.fromisoformat(at), uuid.UUID(rid)
    except ValueError:
        raise Invalid({"after": "this page link is malformed; go back to the first page"}) from None


async def list_people(actor: Actor, *, purpose: str, after: str | None = None, limit: int = 25) -> Page:
    """Newest first, keyset paged on (created_at, id); one audit event names the page's subjects.
    Each row shows what that person's own relation to the viewer allows."""
    scope, args, reach = _reach(actor, "read", purpose, LIST_FIELDS)
    decide = RowDecisions(actor, "read", purpose, LIST_FIELDS, reach)
    visible = decide.columns()
    if not visible:
        raise await _denied(actor, "list", PERSON, purpose, decide.scope_decisions)
    where = scope
    if after:
        at, rid = _parse_cursor(after)
        where += " AND (p.created_at, p.id) < ({}, {})"  # row values use crm_person_keyset
        args = [*args, at, rid]
    sql = _person_query(visible, where) + f" ORDER BY p.created_at DESC, p.id DESC LIMIT {int(limit) + 1}"
    async with write_transaction():
        rows = await raw(sql, *args)
        page, more = rows[:limit], len(rows) > limit
        await _audit(actor, Entry(action="list", entity=PERSON, purpose=purpose,
                                  subjects=tuple(str(r["pseudonym"]) for r in page), fields=decide.summary(page)))
    keys = keys_from_rows(get_kernel().keys, page)
    return Page([_person_record(r, keys, decide.of(r)) for r in page], _cursor(page[-1]) if more else None)


def _search_condition(field: str, query: str) -> tuple[str, list[Any], Callable[[Mapping[str, str | None]], bool]]:
    """The blind-index condition of a search, its arguments, and the test a decrypted candidate must pass."""
    if field in ("email", "phone"):
        wanted = indexing.normalised(field, query)
        values = indexing.lookup_values(field, query)

        def same_value(plain: Mapping[str, str | None]) -> bool:
            return plain.get(field) is not None and indexing.normalised(field, plain[field] or "") == wanted

        return f"p.{field}_index IN ({', '.join('{}' for _ in values)})", list(values), same_value
    tokens = sorted(name_tokens(query))
    if not tokens:
        raise Invalid({"query": "type at least two letters of a name"})
    clauses, args = [], []
    for token in tokens:
        values = indexing.token_lookup(token)
        clauses.append("p.id IN (SELECT person FROM crm_person_token WHERE token_index IN ("
                       + ", ".join("{}" for _ in values) + "))")
        args.extend(values)

    def all_tokens(plain: Mapping[str, str | None]) -> bool:
        return set(tokens) <= name_tokens(*(plain.get(f) for f in indexing.NAME_FIELDS))

    return " AND ".join(clauses), args, all_tokens


async def find_people(actor: Actor, *, purpose: str, field: str, query: str) -> list[Record]:
    """Search by email, phone or name through blind indexes; every candidate is confirmed by
    decrypting it, so a truncated index (shared by several people) never returns a wrong person.
    A name query matches people whose names hold every token of the query.

    Each candidate is decided from its own relation to the viewer: one whose searched field is denied
    is not decrypted at all. Candidates decrypted and found not to match are named too, in a second
    event of the same transaction with outcome "rejected": their data was opened, so their access log
    says so."""
    scope, scope_args, reach = _reach(actor, "read", purpose, LIST_FIELDS)
    searched = ["email"] if field == "email" else ["phone"] if field == "phone" else list(indexing.NAME_FIELDS)
    decide = RowDecisions(actor, "read", purpose, list(dict.fromkeys([*LIST_FIELDS, *searched])), reach)
    if not decide.may_open(searched):
        raise await _denied(actor, "search", PERSON, purpose, {f: decide.scope_decisions[f] for f in searched})
    where, args, matches = _search_condition(field, query)
    fields = decide.columns()
    async with write_transaction():
        # No ORDER BY: the planner must use the index lookup, not walk the keyset index by date.
        rows = await raw(_person_query(fields, f"{scope} AND {where}")
                         + f" LIMIT {indexing.candidate_limit(field)}", *scope_args, *args)
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        keys = keys_from_rows(get_kernel().keys, rows)
        confirmed: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for r in rows:
            pid = _uuid(r["id"])
            dk = keys.get(pid)
            if dk is None or any(d.effect == "deny" for d in decide.of(r, searched).values()):
                continue
            plain = {f: decrypt_field(dk, PERSON, f, pid, r[f]) if r[f] else None for f in searched}
            (confirmed if matches(plain) else rejected).append(r)
        lookup = {f"{field}_index": "lookup"}
        await _audit(actor, Entry(action="search", entity=PERSON, purpose=purpose,
                                  subjects=tuple(str(r["pseudonym"]) for r in confirmed),
                                  fields={**lookup, **decide.summary(confirmed, LIST_FIELDS)}))
        if rejected:
            await _audit(actor, Entry(action="search", entity=PERSON, purpose=purpose, outcome="rejected",
                                      subjects=tuple(str(r["pseudonym"]) for r in rejected),
                                      fields={**lookup, **decide.summary(rejected, searched)}))
    return [_person_record(r, keys, decide.of(r, LIST_FIELDS)) for r in confirmed[:50]]
