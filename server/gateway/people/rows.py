"""Lists and searches decide each row from that row's own relations to the viewer, never the page's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from server.actor import Actor
from server.gateway.people._common import PERSON, _row_relations, _visible
from server.kernel import get_kernel
from server.policy import FieldDecision

RELATIONS: tuple[frozenset[str], ...] = (frozenset(), frozenset({"assigned"}), frozenset({"team"}),
                                         frozenset({"assigned", "team"}))


class RowDecisions:
    """Per-field decisions for each row of a page, from whether the viewer owns that person and whether
    their team serves them. A field that one person's relation grants is never opened on the next row:
    deciding the page by the union of its rows' relations would show it for everyone on the page."""

    def __init__(self, actor: Actor, action: str, purpose: str, fields: Sequence[str],
                 reach: frozenset[str]) -> None:
        self.actor, self.action, self.purpose, self.fields = actor, action, purpose, tuple(fields)
        self._cache: dict[frozenset[str], dict[str, FieldDecision]] = {}
        # The relation sets a row in the query's scope can have: any when the reach is "all", else
        # those sharing a relation with the reach (the query admits no other row).
        self.possible = [r for r in RELATIONS if "all" in reach or r & reach]
        self.scope_decisions = self._for(frozenset(reach - {"all"}))
        """The decisions at the relations that put rows in scope: what a refusal names."""

    def _for(self, relations: frozenset[str]) -> dict[str, FieldDecision]:
        if relations not in self._cache:
            self._cache[relations] = get_kernel().policies.decide(
                roles=self.actor.roles or frozenset({self.actor.kind}), is_self=False, action=self.action,
                purpose=self.purpose, table=PERSON, fields=self.fields, relations=relations)
        return self._cache[relations]

    def columns(self, fields: Iterable[str] | None = None) -> list[str]:
        """The fields some row in scope may show (the columns to select), in the order given."""
        wanted = self.fields if fields is None else tuple(fields)
        seen = {f for r in self.possible for f in _visible(self._for(r))}
        return [f for f in wanted if f in seen]

    def may_open(self, fields: Iterable[str]) -> bool:
        """Whether some row in scope may have all these fields opened (a search must decrypt them)."""
        names = tuple(fields)
        return any(all(self._for(r)[f].effect != "deny" for f in names) for r in self.possible)

    def of(self, row: Mapping[str, Any], fields: Iterable[str] | None = None) -> dict[str, FieldDecision]:
        """This row's decisions (for `fields`, default all), from its own owner and team."""
        decided = self._for(_row_relations(self.actor, row.get("owner_id"), row.get("team")))
        return dict(decided) if fields is None else {f: decided[f] for f in fields}

    def summary(self, rows: Sequence[Mapping[str, Any]], fields: Iterable[str] | None = None) -> dict[str, str]:
        """For the audit event: each field's decisions over the rows named (all alike on most pages)."""
        names = self.fields if fields is None else tuple(fields)
        decided = [self.of(r, names) for r in rows] or [{f: self.scope_decisions[f] for f in names}]
        return {f: " | ".join(sorted({f"{d[f].effect} by {d[f].rule}" for d in decided})) for f in names}
