"""The one SELECT every read builds: the rows, their subject's pseudonym, scope and wrapped data key."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from server.db import is_sqlite
from server.errors import Invalid
from server.gateway.spec import ALIAS, TableSpec
from server.vault.store import KEY_COLUMNS


def indexed_by(table: str, column: str) -> str:
    """SQLite: use the column's index (Piccolo names it `<table>_<column>`). With statistics from
    ANALYZE (or `PRAGMA optimize`) SQLite otherwise scans the whole table for a blind-index lookup that
    many rows share; PostgreSQL's planner chooses well by itself."""
    return f" INDEXED BY {table}_{column}" if is_sqlite() else ""


def select(spec: TableSpec, fields: Iterable[str], where: str, hint: str = "") -> str:
    """Rows of `spec.table` (alias t) with `subject_id`, `pseudonym`, `rel_assigned`/`rel_team` (the
    subject's owner and team), the description's extra attributes, the given personal columns and
    the subject's wrapped data key, in one statement. The identifiers come from fields.yml and the
    description, never from input."""
    shape = spec.shape()
    subject = ALIAS if spec.is_subject else "s"
    parts = [f"{ALIAS}.id", f"{subject}.id AS subject_id", f"{subject}.{shape.pseudonym} AS pseudonym",
             f"{ALIAS}.created_at"]
    parts += [f"{subject}.{column} AS rel_{relation}" for relation, column in shape.scope.items()]
    parts += [f"{expr} AS {name}" for name, expr in spec.extra.items()]
    parts += [f"{ALIAS}.{f}" for f in fields]
    source = f"{spec.table} {ALIAS}{hint}"
    if not spec.is_subject:
        source += f" JOIN {shape.subject_table} s ON s.id = {ALIAS}.{shape.link}"
    return (f"SELECT {', '.join(parts)}, {KEY_COLUMNS} FROM {source} {spec.joins} "
            f"LEFT JOIN vault_subject_key k ON k.subject_id = {subject}.id WHERE {where}")


def subject_condition(spec: TableSpec) -> str:
    """The condition that keeps a query to one subject's rows."""
    return f"{ALIAS}.id = {{}}" if spec.is_subject else f"{ALIAS}.{spec.shape().link} = {{}}"


def cursor(row: Mapping[str, Any]) -> str:
    return f"{row['created_at'].astimezone(dt.UTC).isoformat()}|{row['id']}"


def parse_cursor(text: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        at, rid = text.split("|", 1)
        return dt.datetime.fromisoformat(at), uuid.UUID(rid)
    except ValueError:
        raise Invalid({"after": "this page link is malformed; go back to the first page"}) from None


def newest_first(limit: int) -> str:
    """Keyset order (each described table has an index on (created_at, id))."""
    return f" ORDER BY {ALIAS}.created_at DESC, {ALIAS}.id DESC LIMIT {int(limit)}"
