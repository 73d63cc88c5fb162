"""Tables served by the gateway: a small description in code, the rest read from policies/fields.yml.

The description (`describe`) says how a table is *used*: which personal fields it shows and lists,
its non-personal columns and joins, the action of its page event. Whose data key seals a row, which
column names the subject, which fields are searchable and which columns give record scope are read
from fields.yml (`subject`, `pseudonym`, `scope`, `index`, `index_of`), so a data-protection officer
reviews them in one file and the gateway never guesses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from server.kernel import get_kernel
from server.policy import FieldSpec

ALIAS = "t"
"""The described table's alias in every statement; its subject row (for a child table) is `s`."""


@dataclass(frozen=True)
class Shape:
    """What fields.yml says about one table (resolved for the policy version in force)."""

    subject_table: str
    link: str | None
    """The column naming the row's subject; None on the subject table itself (the row is the subject)."""
    pseudonym: str
    scope: Mapping[str, str]
    """Relation (assigned, team) -> column of the subject table."""
    indexes: Mapping[str, str]
    """Encrypted field -> index kind (email, phone, name)."""
    tokens: tuple[str, str, str] | None
    """For name search: (token table, its subject column, its token column)."""


@dataclass(frozen=True)
class TableSpec:
    """How one table with personal fields is used; see `describe`."""

    table: str
    fields: tuple[str, ...]
    """The encrypted personal fields the gateway reads and writes, in display order."""
    list_fields: tuple[str, ...] = ()
    """The fields a page or a search shows (default: all)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Non-personal attributes: name -> SQL expression over `t` (and `joins`)."""
    joins: str = ""
    columns: tuple[str, ...] = ()
    """Non-personal columns a create may set (e.g. organisation, author_id)."""
    page_action: str = "list"
    """The audit action of a page: "list", or "read" where a page is the record's natural read."""
    missing: str = "No such record; it may have been erased."
    reveal: bool = False
    """Whether masked fields may be revealed (reveal grants name the subject and the field)."""

    @property
    def shown(self) -> tuple[str, ...]:
        return self.list_fields or self.fields

    def shape(self) -> Shape:
        return _shape(self.table)

    @property
    def is_subject(self) -> bool:
        return self.shape().link is None


_REGISTRY: dict[str, TableSpec] = {}
_ELSEWHERE: set[str] = set()
_SHAPES: dict[tuple[str, str], Shape] = {}


def describe(table: str, *, fields: tuple[str, ...], **how: object) -> TableSpec:
    """Describe (once) a table the gateway serves; its fields must be classified in fields.yml."""
    spec = TableSpec(table, fields, **how)  # type: ignore[arg-type]
    _REGISTRY[table] = spec
    return spec


def erased_elsewhere(table: str) -> None:
    """A table linked to a subject whose rows another area removes on erasure (its `also` hook)."""
    _ELSEWHERE.add(table)


def described() -> dict[str, TableSpec]:
    return dict(_REGISTRY)


def linked_tables(subject_table: str) -> list[tuple[str, str]]:
    """(table, column) of every table whose column names a row of `subject_table` (fields.yml order)."""
    policies = get_kernel().policies
    return [(t, c) for t in sorted(policies.tables)
            for c, s in policies.fields(t).items() if s.subject == subject_table]


def cascade(subject_table: str) -> list[tuple[str, str]]:
    """What erasure deletes: every linked table but those another area erases itself."""
    return [(t, c) for t, c in linked_tables(subject_table) if t not in _ELSEWHERE]


def unserved(subject_table: str) -> list[str]:
    """Linked tables with encrypted fields that nobody describes (their rows could never be read)."""
    policies = get_kernel().policies
    return [t for t, _ in linked_tables(subject_table) if t not in _REGISTRY and t not in _ELSEWHERE
            and any(s.encrypted for s in policies.fields(t).values())]


def _named(columns: Mapping[str, FieldSpec], test: str) -> str | None:
    return next((n for n, s in columns.items() if getattr(s, test)), None)


def _shape(table: str) -> Shape:
    policies = get_kernel().policies
    key = (table, policies.version)
    if key in _SHAPES:
        return _SHAPES[key]
    columns = policies.fields(table)
    link = next((n for n, s in columns.items() if s.subject not in (None, "self")), None)
    if link is None and not any(s.subject == "self" for s in columns.values()):
        raise KeyError(f"{table} has no subject in policies/fields.yml: add subject: self to its id, or "
                       "subject: <table> to the column naming whose data each row is")
    subject_table = columns[link].subject if link else table
    assert subject_table is not None
    subject_columns = policies.fields(subject_table)
    pseudonym = _named(subject_columns, "pseudonym")
    if pseudonym is None:
        raise KeyError(f"{subject_table} has no pseudonym column in policies/fields.yml: add pseudonym: true")
    tokens = next(((t, next(c for c, s in policies.fields(t).items() if s.subject == table), c)
                   for t in sorted(policies.tables) for c, s in policies.fields(t).items() if s.index_of == table),
                  None)
    shape = Shape(subject_table=subject_table, link=link, pseudonym=pseudonym,
                  scope={s.scope: n for n, s in subject_columns.items() if s.scope},
                  indexes={n: s.index for n, s in columns.items() if s.index}, tokens=tokens)
    _SHAPES[key] = shape
    return shape
