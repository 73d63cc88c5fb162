"""What policies allow, as data: the role × field matrix and the decisions that differ between two sets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.policy.engine import Effect, FieldDecision, PolicySet
from server.policy.loader import SUBJECT_ROLE

ACTIONS = ("read", "write", "reveal", "export", "erase")
"""Every action access.yml may name (its schema's enum); a test keeps the two in step."""
RELATIONS = ("assigned", "team")
"""How a member of staff may relate to a record, for rules of scope assigned or team."""
PERMISSIVENESS: dict[Effect, int] = {"deny": 0, "mask": 1, "allow": 2}
# Who the record is, as seen by the actor: anyone's, or one they own, their team serves, or both.
ANYONE = frozenset[str]()
CONTEXTS: tuple[frozenset[str], ...] = (ANYONE, *(frozenset({r}) for r in RELATIONS), frozenset(RELATIONS))


@dataclass(frozen=True)
class Cell:
    """One role's most permissive effect on one field, the purpose and rule that give it, and on whose
    records: "all", or the relations (e.g. "assigned") it needs."""

    effect: Effect
    purpose: str | None
    rule: str
    reach: str = "all"

    def __str__(self) -> str:
        return self.effect if self.reach == "all" else f"{self.effect} ({self.reach})"


@dataclass(frozen=True)
class MatrixRow:
    table: str
    field: str
    cells: dict[str, Cell]
    """Role -> its cell."""


@dataclass(frozen=True)
class Change:
    """One decision whose effect differs between two policy sets; ``old`` and ``new`` as described by
    ``describe`` (e.g. "allow", or "deny; allow if assigned")."""

    role: str
    table: str
    field: str
    action: str
    purpose: str
    old: str
    new: str

    def __str__(self) -> str:
        return (f"role {self.role}, {self.table}.{self.field}, {self.action} for {self.purpose}: "
                f"{self.old} -> {self.new}")


def is_self_for(role: str) -> bool:
    """The data subject's role is judged on their own record; staff roles never are."""
    return role == SUBJECT_ROLE


def contexts_for(role: str) -> tuple[frozenset[str], ...]:
    """The data subject acts only on their own record; staff on anyone's or on related ones."""
    return (ANYONE,) if is_self_for(role) else CONTEXTS


def ordered_roles(ps: PolicySet) -> list[str]:
    """Staff roles alphabetically, then the data subject's role."""
    return sorted(ps.roles, key=lambda role: (is_self_for(role), role))


def personal_tables(ps: PolicySet) -> list[str]:
    """Tables with at least one personal field, alphabetically."""
    return sorted(t for t in ps.tables if any(spec.personal for spec in ps.fields(t).values()))


def personal_fields(ps: PolicySet, table: str) -> list[str]:
    """The personal fields of ``table`` in fields.yml order."""
    return [name for name, spec in ps.fields(table).items() if spec.personal]


def decide(ps: PolicySet, role: str, action: str, purpose: str, table: str, fields: list[str],
           context: frozenset[str] = ANYONE) -> dict[str, FieldDecision]:
    """The engine's decisions for one role alone, on a record related to it as ``context`` says."""
    return ps.decide(roles=frozenset({role}), is_self=is_self_for(role), action=action, purpose=purpose,
                     table=table, fields=fields, relations=context)


def _reach(contexts: set[frozenset[str]]) -> str:
    if ANYONE in contexts:
        return "all"
    singles = [r for r in RELATIONS if frozenset({r}) in contexts]
    return "/".join(singles) if singles else "+".join(RELATIONS)


def _most_permissive(ps: PolicySet, role: str, table: str, fields: list[str], action: str) -> dict[str, Cell]:
    found: dict[str, list[tuple[frozenset[str], str, FieldDecision]]] = {field: [] for field in fields}
    for purpose in ps.purposes:
        for context in contexts_for(role):
            for field, decision in decide(ps, role, action, purpose, table, fields, context).items():
                found[field].append((context, purpose, decision))
    cells: dict[str, Cell] = {}
    for field, options in found.items():
        best = max((PERMISSIVENESS[d.effect] for _, _, d in options), default=0)
        if best == 0:
            cells[field] = Cell("deny", None, "default-deny")
            continue
        winners = [(c, p, d) for c, p, d in options if PERMISSIVENESS[d.effect] == best]
        context, purpose, decision = min(winners, key=lambda w: len(w[0]))  # prefer the widest reach
        cells[field] = Cell(decision.effect, purpose, decision.rule, _reach({c for c, _, _ in winners}))
    return cells


def matrix(ps: PolicySet, action: str = "read") -> list[MatrixRow]:
    """A row per personal field of each personal table, a cell per role: the effect of ``action``
    under the role's most permissive purpose (the customer judged on their own record, staff on the
    records they are most widely allowed)."""
    rows: list[MatrixRow] = []
    roles = ordered_roles(ps)
    for table in personal_tables(ps):
        fields = personal_fields(ps, table)
        by_role = {role: _most_permissive(ps, role, table, fields, action) for role in roles}
        rows.extend(MatrixRow(table, field, {role: by_role[role][field] for role in roles}) for field in fields)
    return rows


def describe(effects: dict[frozenset[str], Effect]) -> str:
    """Effects per context in words: "allow" when they agree, else "deny; allow if assigned"."""
    base = effects[ANYONE]
    extra: dict[str, list[str]] = {}
    for context in CONTEXTS[1:]:
        effect = effects.get(context, base)
        # The combined context is only worth naming when it differs from its parts.
        implied = max((effects.get(frozenset({r}), base) for r in context), key=PERMISSIVENESS.__getitem__)
        if effect != base and (len(context) == 1 or effect != implied):
            extra.setdefault(effect, []).append(" and ".join(sorted(context)))
    return "; ".join([base, *(f"{effect} if {' or '.join(where)}" for effect, where in extra.items())])


def _fields(sets: Iterable[PolicySet]) -> list[tuple[str, str]]:
    found: dict[tuple[str, str], None] = {}
    for ps in sets:
        for table in sorted(ps.tables):
            found.update(dict.fromkeys((table, field) for field in ps.fields(table)))
    return sorted(found)


def _described(ps: PolicySet, role: str, action: str, purpose: str, table: str,
               fields: list[str]) -> dict[str, str]:
    per_context = {context: decide(ps, role, action, purpose, table, fields, context)
                   for context in contexts_for(role)}
    return {field: describe({context: d[field].effect for context, d in per_context.items()}) for field in fields}


def diff(old_ps: PolicySet, new_ps: PolicySet) -> list[Change]:
    """Every (role, table, field, action, purpose) whose effect differs from ``old_ps`` to ``new_ps``,
    on anyone's record or on one the role's member of staff is related to.

    Roles, purposes, tables and fields known to either side are compared; one the other side lacks
    counts as denied there (the engine's default deny)."""
    roles = sorted(old_ps.roles | new_ps.roles, key=lambda role: (is_self_for(role), role))
    purposes = list(dict.fromkeys([*old_ps.purposes, *new_ps.purposes]))
    by_table: dict[str, list[str]] = {}
    for table, field in _fields((old_ps, new_ps)):
        by_table.setdefault(table, []).append(field)
    changes: list[Change] = []
    for role in roles:
        for table, fields in by_table.items():
            for action in ACTIONS:
                for purpose in purposes:
                    old = _described(old_ps, role, action, purpose, table, fields)
                    new = _described(new_ps, role, action, purpose, table, fields)
                    changes.extend(Change(role, table, field, action, purpose, old[field], new[field])
                                   for field in fields if old[field] != new[field])
    return changes
