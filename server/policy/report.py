"""What policies allow, as data: the role × field matrix and the decisions that differ between two sets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.policy.engine import Effect, PolicySet
from server.policy.loader import SUBJECT_ROLE

ACTIONS = ("read", "write", "reveal", "export", "erase")
"""Every action access.yml may name (its schema's enum); a test keeps the two in step."""
PERMISSIVENESS: dict[Effect, int] = {"deny": 0, "mask": 1, "allow": 2}


@dataclass(frozen=True)
class Cell:
    """One role's effect on one field under its most permissive purpose (None: every purpose denies)."""

    effect: Effect
    purpose: str | None
    rule: str


@dataclass(frozen=True)
class MatrixRow:
    table: str
    field: str
    cells: dict[str, Cell]
    """Role -> its cell."""


@dataclass(frozen=True)
class Change:
    """One decision whose effect differs between two policy sets."""

    role: str
    table: str
    field: str
    action: str
    purpose: str
    old: Effect
    new: Effect

    def __str__(self) -> str:
        return (f"role {self.role}, {self.table}.{self.field}, {self.action} for {self.purpose}: "
                f"{self.old} -> {self.new}")


def is_self_for(role: str) -> bool:
    """The data subject's role is judged on their own record; staff roles never are."""
    return role == SUBJECT_ROLE


def ordered_roles(ps: PolicySet) -> list[str]:
    """Staff roles alphabetically, then the data subject's role."""
    return sorted(ps.roles, key=lambda role: (is_self_for(role), role))


def personal_tables(ps: PolicySet) -> list[str]:
    """Tables with at least one personal field, alphabetically."""
    return sorted(t for t in ps.tables if any(spec.personal for spec in ps.fields(t).values()))


def personal_fields(ps: PolicySet, table: str) -> list[str]:
    """The personal fields of ``table`` in fields.yml order."""
    return [name for name, spec in ps.fields(table).items() if spec.personal]


def _most_permissive(ps: PolicySet, role: str, table: str, fields: list[str], action: str) -> dict[str, Cell]:
    best = {field: Cell("deny", None, "default-deny") for field in fields}
    for purpose in ps.purposes:
        decisions = ps.decide(roles=frozenset({role}), is_self=is_self_for(role), action=action,
                              purpose=purpose, table=table, fields=fields)
        for field, decision in decisions.items():
            if PERMISSIVENESS[decision.effect] > PERMISSIVENESS[best[field].effect]:
                best[field] = Cell(decision.effect, purpose, decision.rule)
    return best


def matrix(ps: PolicySet, action: str = "read") -> list[MatrixRow]:
    """A row per personal field of each personal table, a cell per role: the effect of ``action``
    under the role's most permissive purpose (the customer judged on their own record)."""
    rows: list[MatrixRow] = []
    roles = ordered_roles(ps)
    for table in personal_tables(ps):
        fields = personal_fields(ps, table)
        by_role = {role: _most_permissive(ps, role, table, fields, action) for role in roles}
        rows.extend(MatrixRow(table, field, {role: by_role[role][field] for role in roles}) for field in fields)
    return rows


def _fields(sets: Iterable[PolicySet]) -> list[tuple[str, str]]:
    found: dict[tuple[str, str], None] = {}
    for ps in sets:
        for table in sorted(ps.tables):
            found.update(dict.fromkeys((table, field) for field in ps.fields(table)))
    return sorted(found)


def diff(old_ps: PolicySet, new_ps: PolicySet) -> list[Change]:
    """Every (role, table, field, action, purpose) whose effect differs from ``old_ps`` to ``new_ps``.

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
                    old, new = (ps.decide(roles=frozenset({role}), is_self=is_self_for(role), action=action,
                                          purpose=purpose, table=table, fields=fields)
                                for ps in (old_ps, new_ps))
                    changes.extend(Change(role, table, field, action, purpose, old[field].effect,
                                          new[field].effect)
                                   for field in fields if old[field].effect != new[field].effect)
    return changes
