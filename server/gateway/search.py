"""Search any described table through its blind indexes; every candidate is confirmed by decrypting it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry
from server.db import raw
from server.errors import Invalid
from server.gateway import audit, indexing, query, scope
from server.gateway.decide import RowDecisions, as_uuid, denied, reach
from server.gateway.reads import subject_keys, to_record
from server.gateway.records import Record
from server.gateway.spec import TableSpec
from server.vault.blind import name_tokens
from server.vault.cipher import decrypt_field

Matches = Callable[[Mapping[str, str | None]], bool]


def searched_fields(spec: TableSpec, field: str) -> list[str]:
    """The encrypted fields a search on `field` decrypts: the field itself, or every name-indexed one."""
    indexes = spec.shape().indexes
    if field == "name":
        names = [f for f, kind in indexes.items() if kind == "name"]
        if names:
            return names
    elif indexes.get(field) in ("email", "phone"):
        return [field]
    known = sorted({f for f, k in indexes.items() if k != "name"} | ({"name"} if "name" in indexes.values() else set()))
    raise Invalid({"field": f"'{field[:30]}' cannot be searched; search by {', '.join(known) or 'nothing'}"})


def _condition(spec: TableSpec, field: str, searched: list[str], text: str) -> tuple[str, list[Any], Matches]:
    """The blind-index condition of a search, its arguments, and the test a decrypted candidate must pass."""
    if field != "name":
        kind = spec.shape().indexes[field]
        wanted = indexing.normalised(kind, text)
        values = indexing.lookup_values(kind, text)

        def same_value(plain: Mapping[str, str | None]) -> bool:
            return plain.get(field) is not None and indexing.normalised(kind, plain[field] or "") == wanted

        return f"t.{field}_index IN ({', '.join('{}' for _ in values)})", list(values), same_value
    tokens = sorted(name_tokens(text))
    if not tokens:
        raise Invalid({"query": "type at least two letters of a name"})
    tokens_table, link, column = spec.shape().tokens or ("", "", "")
    clauses, args = [], []
    for token in tokens:
        values = indexing.token_lookup(token)
        clauses.append(f"t.id IN (SELECT {link} FROM {tokens_table}{query.indexed_by(tokens_table, column)} "
                       f"WHERE {column} IN ("
                       + ", ".join("{}" for _ in values) + "))")
        args.extend(values)

    def all_tokens(plain: Mapping[str, str | None]) -> bool:
        return set(tokens) <= name_tokens(*(plain.get(f) for f in searched))

    return " AND ".join(clauses), args, all_tokens


async def search(spec: TableSpec, actor: Actor, *, purpose: str, field: str, text: str,
                 limit: int = 50) -> list[Record]:
    """Search by one indexed field (or "name": every name-indexed field holds each token of the query).
    A truncated index is shared by several rows, so each candidate is decrypted and confirmed.

    Each candidate is decided from its own subject's relation to the viewer: one whose searched field
    is denied is not decrypted at all. Candidates decrypted and found not to match are named too, in a
    second event with outcome "rejected": their data was opened, so their access log says so."""
    searched = searched_fields(spec, field)
    in_scope, scope_args, found = reach(actor, spec, "read", purpose, spec.shown)
    decider = RowDecisions(actor, "read", purpose, spec.table, list(dict.fromkeys([*spec.shown, *searched])), found)
    if not decider.may_open(searched):
        raise await denied(actor, "search", spec.table, purpose, {f: decider.scope_decisions[f] for f in searched})
    where, args, matches = _condition(spec, field, searched, text)
    kind = "name" if field == "name" else spec.shape().indexes[field]
    # No ORDER BY: the planner must use the index lookup, not walk the keyset index by date.
    hint = "" if field == "name" else query.indexed_by(spec.table, f"{field}_index")
    sql = (query.select(spec, decider.columns(), f"{in_scope} AND {where}", hint)
           + f" LIMIT {indexing.candidate_limit(kind)}")
    rows = await raw(sql, *scope_args, *args)
    scope.remember(rows)
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    keys = subject_keys(rows)
    confirmed: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for r in rows:
        dk = keys.get(as_uuid(r["subject_id"]))
        if dk is None or any(d.effect == "deny" for d in decider.of(r, searched).values()):
            continue
        rid = as_uuid(r["id"])
        plain = {f: decrypt_field(dk, spec.table, f, rid, r[f]) if r[f] else None for f in searched}
        (confirmed if matches(plain) else rejected).append(r)
    lookup = {f"{field}_index": "lookup"}
    entries = [Entry(action="search", entity=spec.table, purpose=purpose,
                     subjects=tuple(str(r["pseudonym"]) for r in confirmed),
                     fields={**lookup, **decider.summary(confirmed, spec.shown)})]
    if rejected:
        entries.append(Entry(action="search", entity=spec.table, purpose=purpose, outcome="rejected",
                             subjects=tuple(str(r["pseudonym"]) for r in rejected),
                             fields={**lookup, **decider.summary(rejected, searched)}))
    await audit.record(actor, entries)
    return [to_record(spec, r, keys, decider.of(r, spec.shown)) for r in confirmed[:limit]]
