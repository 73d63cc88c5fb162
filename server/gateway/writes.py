"""Writing any described table: create (one or many, one event), update, sealing values and indexes."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry
from server.db import insert_many, raw, write_transaction
from server.errors import Invalid, NotFound
from server.gateway import audit, indexing, query, scope
from server.gateway.decide import all_allowed, as_uuid, decide, denied, is_uuid, relations, summary
from server.gateway.reads import subject_row
from server.gateway.spec import TableSpec
from server.kernel import get_kernel
from server.vault.blind import search_index
from server.vault.cipher import DataKey, decrypt_field, encrypt_field
from server.vault.store import create_subject_keys, keys_from_rows


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_fields(spec: TableSpec, names: Sequence[str]) -> None:
    unknown = sorted(set(names) - set(spec.fields))
    if unknown:
        raise Invalid({f: f"not a field of {spec.table}" for f in unknown})


def sealed(spec: TableSpec, dk: DataKey, row_id: uuid.UUID, values: Mapping[str, str | None]) -> dict[str, Any]:
    """Column -> token (or None) for the values given, plus the blind-index columns of those fields."""
    out: dict[str, Any] = {name: None if value in (None, "") else encrypt_field(dk, spec.table, name, row_id, value)
                           for name, value in values.items()}
    provider = get_kernel().keys
    for name, kind in spec.shape().indexes.items():
        if kind != "name" and name in values:
            value = values[name]
            out[f"{name}_index"] = (search_index(provider, kind, indexing.normalised(kind, value), indexing.bits(kind))
                                    if value else None)
    return out


def _name_fields(spec: TableSpec) -> list[str]:
    return [f for f, kind in spec.shape().indexes.items() if kind == "name"]


async def _replace_tokens(spec: TableSpec, row_id: uuid.UUID, names: Mapping[str, str | None]) -> None:
    table, link, column = spec.shape().tokens or ("", "", "")
    await raw(f"DELETE FROM {table} WHERE {link} = {{}}", row_id)
    await insert_many(table, [link, column], indexing.token_rows(row_id, names, _name_fields(spec)))


async def create(spec: TableSpec, actor: Actor, *, purpose: str, rows: Sequence[Mapping[str, str | None]],
                 subject: uuid.UUID | None = None, columns: Sequence[Mapping[str, Any]] | None = None,
                 action: str = "create") -> list[uuid.UUID]:
    """Create rows in one transaction with one event naming their subjects. On a subject table each row
    is a new subject with its own data key, owned by the member of staff who creates it and their team;
    on a child table every row belongs to `subject` and is sealed under their key. `columns` gives each
    row's non-personal columns (those the description lists)."""
    names = sorted({n for row in rows for n in row})
    _check_fields(spec, names)
    extra = list(columns) if columns is not None else [{} for _ in rows]
    bad = sorted({c for cols in extra for c in cols} - set(spec.columns))
    if bad:
        raise Invalid({c: f"not a column a create of {spec.table} may set" for c in bad})
    shape = spec.shape()
    refusal = None
    ids = [uuid.uuid4() for _ in rows]
    async with write_transaction():
        head = None if spec.is_subject else await subject_row(spec, _required(subject))
        # What a member of staff creates is theirs and their team's.
        rel = frozenset({"assigned", "team"}) if spec.is_subject else relations(actor, head)
        decisions = decide(actor, "write", purpose, spec.table, names, subject, rel)
        if not all_allowed(decisions):
            refusal = (decisions, str(head["pseudonym"]) if head else None)
        elif not spec.is_subject and head is None:
            raise NotFound(spec.missing)
        else:
            now = _now()
            if head is None:
                keys = await create_subject_keys(get_kernel().keys, ids)
                owner = uuid.UUID(actor.id) if actor.kind == "staff" and is_uuid(actor.id) else None
                relation = {"assigned": owner, "team": actor.team}
                fixed = [{"id": i, shape.pseudonym: uuid.uuid4(), "updated_at": now,
                          **{c: relation[r] for r, c in shape.scope.items()}} for i in ids]
                pseudonyms = [str(f[shape.pseudonym]) for f in fixed]
            else:
                dk = _key_of(head)[as_uuid(head["subject_id"])]
                keys = {i: dk for i in ids}
                fixed = [{"id": i, shape.link or "": subject} for i in ids]
                pseudonyms = [str(head["pseudonym"])]
            out, tokens = [], []
            for row_id, values, base, more in zip(ids, rows, fixed, extra):
                out.append({**base, "created_at": now, **more, **sealed(spec, keys[row_id], row_id, values)})
                if shape.tokens:
                    tokens.extend(indexing.token_rows(row_id, values, _name_fields(spec)))
            cols = sorted({c for r in out for c in r})
            await insert_many(spec.table, cols, [tuple(r.get(c) for c in cols) for r in out])
            if tokens and shape.tokens:
                await insert_many(shape.tokens[0], [shape.tokens[1], shape.tokens[2]], tokens)
            await audit.record(actor, [Entry(action=action, entity=spec.table, purpose=purpose,
                                             subjects=tuple(pseudonyms), fields=summary(decisions))])
    if refusal is not None:
        raise await denied(actor, action, spec.table, purpose, *refusal)
    return ids


def _required(subject: uuid.UUID | None) -> uuid.UUID:
    if subject is None:
        raise ValueError("a row of a child table needs its subject")
    return subject


def _key_of(row: Mapping[str, Any]) -> dict[uuid.UUID, DataKey]:
    keys = keys_from_rows(get_kernel().keys, [dict(row)], id_column="subject_id")
    if not keys:
        raise NotFound("This person's data key is gone (erased); nothing can be written.")
    return keys


async def update(spec: TableSpec, actor: Actor, *, purpose: str, row_id: uuid.UUID,
                 changes: Mapping[str, str | None]) -> None:
    """Change some fields of one row, sealed again under its subject's key, with its indexes."""
    _check_fields(spec, list(changes))
    if not changes:
        return
    names = _name_fields(spec)
    refusal = None
    async with write_transaction():
        found = await raw(query.select(spec, names, "t.id = {}"), row_id)
        row = found[0] if found else None
        subject = as_uuid(row["subject_id"]) if row else (row_id if spec.is_subject else None)
        decisions = decide(actor, "write", purpose, spec.table, changes.keys(), subject, relations(actor, row))
        if not all_allowed(decisions):
            refusal = (decisions, str(row["pseudonym"]) if row else None)
        elif row is None:
            raise NotFound(spec.missing)
        else:
            dk = _key_of(row)[as_uuid(row["subject_id"])]
            scope.forget([as_uuid(row["subject_id"])])
            seal = sealed(spec, dk, row_id, changes)
            if "updated_at" in get_kernel().policies.fields(spec.table):
                seal["updated_at"] = _now()
            await raw(f"UPDATE {spec.table} SET {', '.join(f'{c} = {{}}' for c in seal)} WHERE id = {{}}",
                      *seal.values(), row_id)
            if spec.shape().tokens and any(f in changes for f in names):
                current = {f: changes[f] if f in changes else
                           (decrypt_field(dk, spec.table, f, row_id, row[f]) if row[f] else None) for f in names}
                await _replace_tokens(spec, row_id, current)
            await audit.record(actor, [Entry(action="update", entity=spec.table, purpose=purpose,
                                             subjects=(str(row["pseudonym"]),), fields=summary(decisions))])
    if refusal is not None:
        raise await denied(actor, "update", spec.table, purpose, *refusal)
