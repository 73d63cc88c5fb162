"""The pure policy evaluator: per-field decisions (allow, mask, deny) and masking; default deny."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from server.timing import phase

Sensitivity = Literal["low", "normal", "high"]
Effect = Literal["allow", "mask", "deny"]

ANY = "*"
DEFAULT_RULE = "default-deny"
REDACTED = "•••••"
DECIDE_MEMO_SIZE = 4096
"""Distinct decide() questions a PolicySet remembers; past this the memo starts over (bounded memory)."""


@dataclass(frozen=True)
class FieldSpec:
    """One personal column as fields.yml describes it."""

    category: str
    sensitivity: Sensitivity
    encrypted: bool
    searchable: bool
    mask: str = "redact"
    personal: bool = True
    """False for technical columns (ids, timestamps, hashes) classified only to show they were looked at."""
    retention: str | None = None
    """Id of the retention.yml rule that says how long the value is kept."""
    subject: str | None = None
    """Whose data the row is: `self` on a subject table's id (the row is a person, sealed under their own
    data key); a subject table's name on a column linking a row to its subject (sealed under theirs)."""
    pseudonym: bool = False
    """The subject table's pseudonym column: what audit events name instead of the id."""
    scope: str | None = None
    """`assigned` or `team`: the column that gives a member of staff that relation to the record."""
    index: str | None = None
    """`email`, `phone` or `name`: the blind index that makes this encrypted field searchable."""
    index_of: str | None = None
    """On a blind-index column: the field it indexes (`email`), or for a token table the table whose
    `name` fields it holds tokens of (`crm_person`)."""


@dataclass(frozen=True)
class Purpose:
    """One processing purpose from purposes.yml."""

    id: str
    title_de: str
    title_en: str
    legal_basis: str
    consent_required: bool
    description: str
    recipients: tuple[str, ...] = ()
    """Who receives the data for this purpose (GDPR Art. 30(1)(d))."""


@dataclass(frozen=True)
class RevealReason:
    """Why a member of staff reveals a masked field (purposes.yml reveal_reasons): the id is what is recorded."""

    id: str
    title_de: str
    title_en: str


@dataclass(frozen=True)
class RetentionRule:
    """How long data is kept (retention.yml): `keep_days` after `after`, then `action`."""

    id: str
    description: str
    keep_days: int
    after: str
    action: str


@dataclass(frozen=True)
class FieldDecision:
    """What may happen to one field, and the id of the rule that decided it."""

    effect: Effect
    rule: str


DEFAULT_DENY = FieldDecision("deny", DEFAULT_RULE)


@dataclass(frozen=True)
class Rule:
    """One access rule from access.yml; ``*`` in purposes or fields means any."""

    id: str
    roles: frozenset[str]
    actions: frozenset[str]
    purposes: frozenset[str]
    tables: frozenset[str]
    fields: frozenset[str]
    categories: tuple[str, ...]
    effect: Effect
    scope: Literal["self", "assigned", "team", "all"]
    priority: int

    def matches(self, roles: Iterable[str], is_self: bool, action: str, purpose: str,
                table: str, field: str, spec: FieldSpec, relations: frozenset[str] = frozenset()) -> bool:
        return (
            not self.roles.isdisjoint(roles)
            and action in self.actions
            and (ANY in self.purposes or purpose in self.purposes)
            and table in self.tables
            and (ANY in self.fields or field in self.fields
                 or any(category_matches(c, spec.category) for c in self.categories))
            and (self.scope == "all" or (self.scope == "self" and is_self) or self.scope in relations)
        )


def category_matches(rule_category: str, field_category: str) -> bool:
    """``contact`` matches ``contact.email``; ``contact.email`` matches only itself."""
    return field_category == rule_category or field_category.startswith(rule_category + ".")


def _year_only(value: str) -> str:
    return value[:4] + "-••-••" if re.match(r"\d{4}", value) else REDACTED


def _last_four(value: str) -> str:
    return "•••" + value[-4:] if len(value) > 4 else REDACTED


def _email_domain(value: str) -> str:
    _, at, domain = value.rpartition("@")
    return "•••@" + domain if at and domain else REDACTED


MASKS: dict[str, Callable[[str], str]] = {
    "redact": lambda _value: REDACTED,
    "year_only": _year_only,
    "last_four": _last_four,
    "email_domain": _email_domain,
}


class PolicySet:
    """A fully validated set of policies; build it with ``load_policies``."""

    def __init__(self, *, version: str, fields: Mapping[str, Mapping[str, FieldSpec]],
                 purposes: Mapping[str, Purpose], roles: Iterable[str],
                 rules: Iterable[Rule], retention: Mapping[str, RetentionRule] | None = None,
                 reveal_reasons: Mapping[str, RevealReason] | None = None) -> None:
        self.version = version
        self._reveal_reasons = dict(reveal_reasons or {})
        self._retention = dict(retention or {})
        self._fields = {table: dict(specs) for table, specs in fields.items()}
        self._purposes = dict(purposes)
        self._roles = frozenset(roles)
        # Stable sort: equal priorities keep file order.
        self._rules = tuple(sorted(rules, key=lambda rule: -rule.priority))
        # decide() is pure in its arguments and this (immutable) set: a policy reload builds a new
        # PolicySet, so the memo never outlives the policies it was computed from.
        self._decided: dict[tuple, dict[str, FieldDecision]] = {}

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self._fields)

    @property
    def purposes(self) -> dict[str, Purpose]:
        return dict(self._purposes)

    @property
    def reveal_reasons(self) -> dict[str, RevealReason]:
        """The reasons a reveal may give, in file order."""
        return dict(self._reveal_reasons)

    @property
    def roles(self) -> frozenset[str]:
        return self._roles

    @property
    def retention(self) -> dict[str, RetentionRule]:
        return dict(self._retention)

    def fields(self, table: str) -> dict[str, FieldSpec]:
        """The personal fields of ``table``; KeyError names the known tables if it has none."""
        if table not in self._fields:
            known = ", ".join(sorted(self._fields))
            raise KeyError(f"unknown table {table!r}; known tables: {known}")
        return dict(self._fields[table])

    def decide(self, *, roles: frozenset[str], is_self: bool, action: str, purpose: str,
               table: str, fields: Iterable[str], relations: frozenset[str] = frozenset(),
               ) -> dict[str, FieldDecision]:
        """One decision per field, in the order given; unknown purpose, table or field: deny.

        `relations` says how the acting member of staff relates to the record: "assigned" (they
        own it), "team" (their team serves it). Rules with that scope apply only then.
        """
        with phase("decide"):
            names = tuple(fields)
            key = (frozenset(roles), is_self, action, purpose, table, names, frozenset(relations))
            decided = self._decided.get(key)
            if decided is None:
                decided = self._decide_all(roles, is_self, action, purpose, table, names, relations)
                if len(self._decided) >= DECIDE_MEMO_SIZE:
                    self._decided.clear()
                self._decided[key] = decided
            # Callers may change their dict (a reveal grant upgrades one field): never the memo's.
            return dict(decided)

    def _decide_all(self, roles: frozenset[str], is_self: bool, action: str, purpose: str, table: str,
                    fields: tuple[str, ...], relations: frozenset[str]) -> dict[str, FieldDecision]:
        specs = self._fields.get(table, {})
        known_purpose = purpose in self._purposes
        decisions: dict[str, FieldDecision] = {}
        for field in fields:
            spec = specs.get(field)
            decisions[field] = (
                self._decide_one(roles, is_self, action, purpose, table, field, spec, relations)
                if spec is not None and known_purpose else DEFAULT_DENY
            )
        return decisions

    def reach(self, *, roles: frozenset[str], action: str, purpose: str, table: str,
              fields: Iterable[str]) -> frozenset[str]:
        """Which records the role may act on at all: {"all"}, or some of {"assigned", "team"}, or
        nothing. Queries filter by it, so records out of scope are never read."""
        fields = list(fields)

        def grants(relations: frozenset[str]) -> bool:
            return any(d.effect != "deny" for d in self.decide(
                roles=roles, is_self=False, action=action, purpose=purpose, table=table, fields=fields,
                relations=relations).values())

        if grants(frozenset()):
            return frozenset({"all"})
        return frozenset(r for r in ("assigned", "team") if grants(frozenset({r})))

    def _decide_one(self, roles: frozenset[str], is_self: bool, action: str, purpose: str,
                    table: str, field: str, spec: FieldSpec,
                    relations: frozenset[str] = frozenset()) -> FieldDecision:
        for rule in self._rules:
            if rule.matches(roles, is_self, action, purpose, table, field, spec, relations):
                # High fields are masked on a staff read; the subject reading their own
                # record (a scope-self rule) sees them, and "reveal" shows them in full.
                if (rule.effect == "allow" and action == "read" and spec.sensitivity == "high"
                        and rule.scope != "self"):
                    return FieldDecision("mask", rule.id)
                return FieldDecision(rule.effect, rule.id)
        return DEFAULT_DENY

    def mask(self, table: str, field: str, value: str) -> str:
        """``value`` masked by the field's strategy; unknown fields are redacted."""
        spec = self._fields.get(table, {}).get(field)
        return MASKS.get(spec.mask if spec else "redact", MASKS["redact"])(value)
