"""Cross-checks of the gateway keys in fields.yml: whose row it is, what is searched, what gives scope.

They are what a data-protection officer reviews beside the classification: which subject's key seals
a row, which column names that subject, which fields are searchable through which blind index, and
which columns relate a member of staff to the record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from server.policy.engine import FieldSpec

Error = Callable[[Sequence[str | int], str, str], Exception]


def check_links(fields: Mapping[str, Mapping[str, FieldSpec]], error: Error) -> None:
    """Raise (through `error(path, problem, fix)`) at the first key that does not fit the others."""
    subject_tables = {t for t, cols in fields.items() if any(s.subject == "self" for s in cols.values())}
    for table, columns in fields.items():
        selves = [n for n, s in columns.items() if s.subject == "self"]
        if len(selves) > 1:
            raise error(("tables", table, selves[1], "subject"), f"{table} has two subject: self columns",
                        f"keep subject: self on the one id column ({selves[0]})")
        for name, spec in columns.items():
            at = ("tables", table, name)
            if spec.subject not in (None, "self") and spec.subject not in subject_tables:
                raise error((*at, "subject"), f"{table}.{name} names subject table '{spec.subject}', which has no "
                            "subject: self column", f"subject tables: {', '.join(sorted(subject_tables)) or 'none'}")
            if (spec.pseudonym or spec.scope) and table not in subject_tables:
                key = "pseudonym" if spec.pseudonym else "scope"
                raise error((*at, key), f"{table}.{name} has {key} but {table} is not a subject table",
                            "put pseudonym and scope on the subject table (the one with subject: self)")
            if spec.index and not spec.encrypted:
                raise error((*at, "index"), f"{table}.{name} has index: {spec.index} but is not encrypted",
                            "blind indexes are for encrypted fields; set encrypted: true or drop index")
            if spec.index_of is not None:
                _check_index_column(fields, table, name, spec, error)
        for name, spec in columns.items():
            if spec.index in ("email", "phone") and f"{name}_index" not in columns:
                raise error(("tables", table, name, "index"), f"{table}.{name} has index: {spec.index} but "
                            f"{table} has no column {name}_index", f"add {name}_index with index_of: {name}")
            if spec.index == "name" and not any(s.index_of == table for cols in fields.values()
                                                for s in cols.values()):
                raise error(("tables", table, name, "index"), f"{table}.{name} has index: name but no token "
                            f"table holds its tokens", f"add a token column with index_of: {table}")


def _check_index_column(fields: Mapping[str, Mapping[str, FieldSpec]], table: str, name: str, spec: FieldSpec,
                        error: Error) -> None:
    at = ("tables", table, name, "index_of")
    if spec.category != "index.blind":
        raise error(at, f"{table}.{name} has index_of but category {spec.category}",
                    "a blind-index column has category: index.blind")
    target = spec.index_of or ""
    if target in fields:  # a token table: it also names the row its tokens belong to
        if not any(s.subject == target for s in fields[table].values()):
            raise error(at, f"token table {table} holds tokens of {target} but no column links it there",
                        f"add subject: {target} to the column naming the {target} row")
        return
    indexed = fields[table].get(target)
    if indexed is None or indexed.index is None:
        raise error(at, f"{table}.{name} has index_of: {target}, which is no indexed field of {table}",
                    "name a field of this table that has index: email, phone or name")
