"""Decisions for any described table: per row, from the row's subject's own relation to the viewer."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry
from server.errors import PolicyDenied
from server.gateway import audit
from server.gateway.spec import ALIAS, TableSpec
from server.kernel import get_kernel
from server.policy import FieldDecision

RELATIONS: tuple[frozenset[str], ...] = (frozenset(), frozenset({"assigned"}), frozenset({"team"}),
                                         frozenset({"assigned", "team"}))


def roles(actor: Actor) -> frozenset[str]:
    return actor.roles or frozenset({actor.kind})


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def relations(actor: Actor, row: Mapping[str, Any] | None) -> frozenset[str]:
    """How a member of staff relates to a row's subject: "assigned" (they own them), "team" (their team
    serves them). Read from the `rel_assigned` / `rel_team` columns every gateway query selects."""
    if actor.kind != "staff" or row is None:
        return frozenset()
    owner, team = row.get("rel_assigned"), row.get("rel_team")
    return frozenset({"assigned"} if owner is not None and str(owner) == actor.id else set()) | frozenset(
        {"team"} if team is not None and actor.team is not None and team == actor.team else set())


def decide(actor: Actor, action: str, purpose: str, table: str, fields: Iterable[str],
           subject: uuid.UUID | None, relations: frozenset[str] = frozenset()) -> dict[str, FieldDecision]:
    return get_kernel().policies.decide(
        roles=roles(actor), is_self=subject is not None and actor.is_self(subject), action=action,
        purpose=purpose, table=table, fields=fields, relations=relations)


def reach(actor: Actor, spec: TableSpec, action: str, purpose: str,
          fields: Iterable[str]) -> tuple[str, list[Any], frozenset[str]]:
    """The SQL condition that keeps a page or search to the records this actor may see at all (record
    scope, in the query itself), its arguments, and the reach: {"all"} or the relations admitting a row."""
    found = get_kernel().policies.reach(roles=roles(actor), action=action, purpose=purpose, table=spec.table,
                                        fields=fields)
    if "all" in found:
        return "1 = 1", [], found
    scope = spec.shape().scope
    where = ALIAS if spec.is_subject else "s"
    clauses: list[str] = []
    args: list[object] = []
    if "assigned" in found and "assigned" in scope and is_uuid(actor.id):
        clauses.append(f"{where}.{scope['assigned']} = {{}}")
        args.append(uuid.UUID(actor.id))
    if "team" in found and "team" in scope and actor.team:
        clauses.append(f"{where}.{scope['team']} = {{}}")
        args.append(actor.team)
    return ("(" + " OR ".join(clauses) + ")" if clauses else "1 = 0"), args, found


def summary(decisions: Mapping[str, FieldDecision]) -> dict[str, str]:
    return {f: f"{d.effect} by {d.rule}" for f, d in decisions.items()}


def visible(decisions: Mapping[str, FieldDecision]) -> list[str]:
    return [f for f, d in decisions.items() if d.effect != "deny"]


def all_allowed(decisions: Mapping[str, FieldDecision]) -> bool:
    return all(d.effect == "allow" for d in decisions.values())


def denial(actor: Actor, action: str, table: str, purpose: str, decisions: Mapping[str, FieldDecision],
           pseudonym: str | None = None) -> tuple[Entry, PolicyDenied]:
    """The event of a refusal (naming the subject it aimed at, so they see it in their access log) and
    the error that tells the actor which rule refused which field."""
    entry = Entry(action=action, entity=table, purpose=purpose, outcome="denied",
                  subjects=(pseudonym,) if pseudonym else (), fields=summary(decisions))
    refused = sorted(f for f, d in decisions.items() if d.effect == "deny")
    rules = sorted({decisions[f].rule for f in refused})
    return entry, PolicyDenied(
        f"Your role ({actor.role}) may not {action} {table} field(s) {', '.join(refused)} "
        f"for purpose '{purpose}' (decided by {', '.join(rules)}). Ask an administrator if you need it."
    )


async def denied(actor: Actor, action: str, table: str, purpose: str, decisions: Mapping[str, FieldDecision],
                 pseudonym: str | None = None) -> PolicyDenied:
    """Record the denial (its own transaction) and return the error to raise."""
    entry, error = denial(actor, action, table, purpose, decisions, pseudonym)
    await audit.record(actor, [entry])
    return error


class RowDecisions:
    """Per-field decisions for each row of a page, from whether the viewer owns that row's subject and
    whether their team serves them. A field that one row's relation grants is never opened on the next
    row: deciding the page by the union of its rows' relations would show it for everyone on the page."""

    def __init__(self, actor: Actor, action: str, purpose: str, table: str, fields: Sequence[str],
                 reach: frozenset[str]) -> None:
        self.actor, self.action, self.purpose, self.table, self.fields = actor, action, purpose, table, tuple(fields)
        self._cache: dict[frozenset[str], dict[str, FieldDecision]] = {}
        # The relation sets a row in the query's scope can have: any when the reach is "all", else
        # those sharing a relation with the reach (the query admits no other row).
        self.possible = [r for r in RELATIONS if "all" in reach or r & reach]
        self.scope_decisions = self._for(frozenset(reach - {"all"}))
        """The decisions at the relations that put rows in scope: what a refusal names."""

    def _for(self, rel: frozenset[str]) -> dict[str, FieldDecision]:
        if rel not in self._cache:
            self._cache[rel] = get_kernel().policies.decide(
                roles=roles(self.actor), is_self=False, action=self.action, purpose=self.purpose,
                table=self.table, fields=self.fields, relations=rel)
        return self._cache[rel]

    def columns(self, fields: Iterable[str] | None = None) -> list[str]:
        """The fields some row in scope may show (the columns to select), in the order given."""
        wanted = self.fields if fields is None else tuple(fields)
        seen = {f for r in self.possible for f in visible(self._for(r))}
        return [f for f in wanted if f in seen]

    def may_open(self, fields: Iterable[str]) -> bool:
        """Whether some row in scope may have all these fields opened (a search must decrypt them)."""
        names = tuple(fields)
        return any(all(self._for(r)[f].effect != "deny" for f in names) for r in self.possible)

    def of(self, row: Mapping[str, Any], fields: Iterable[str] | None = None) -> dict[str, FieldDecision]:
        """This row's decisions (for `fields`, default all), from its own subject's owner and team."""
        decided = self._for(relations(self.actor, row))
        return dict(decided) if fields is None else {f: decided[f] for f in fields}

    def summary(self, rows: Sequence[Mapping[str, Any]], fields: Iterable[str] | None = None) -> dict[str, str]:
        """For the audit event: each field's decisions over the rows named (all alike on most pages)."""
        names = self.fields if fields is None else tuple(fields)
        decided = [self.of(r, names) for r in rows] or [{f: self.scope_decisions[f] for f in names}]
        return {f: " | ".join(sorted({f"{d[f].effect} by {d[f].rule}" for d in decided})) for f in names}
