"""People and their notes through the gateway: decide, audit in the same transaction, decrypt."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry, append
from server.crm.tables import Note, Person, PersonToken, RevealGrant
from server.db import insert_many, raw, write_transaction
from server.errors import Invalid, NotFound, PolicyDenied
from server.gateway import indexing
from server.gateway.records import Page, Record
from server.kernel import get_kernel
from server.policy import FieldDecision
from server.settings import get_settings
from server.vault.blind import name_tokens
from server.vault.cipher import DataKey, decrypt_field, encrypt_field
from server.vault.ledger import record_erasure
from server.vault.store import (
    KEY_COLUMNS,
    create_subject_keys,
    key_join,
    keys_from_rows,
    load_data_keys,
    shred_subject_keys,
)

PERSON = "crm_person"
NOTE = "crm_note"
PERSON_FIELDS = ("given_name", "family_name", "email", "phone", "address", "birth_date")
LIST_FIELDS = ("given_name", "family_name", "email")


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _decide(actor: Actor, action: str, purpose: str, table: str, fields: Iterable[str],
                  subject: uuid.UUID | None, relations: frozenset[str] | None = None) -> dict[str, FieldDecision]:
    """Per-field decisions. For one person (`subject`), a member of staff's relation to them
    (owner, team) is read first, so scope-limited rules apply only to their own people."""
    is_self = subject is not None and actor.is_self(subject)
    if relations is None:
        relations = await _relations(actor, subject) if subject is not None else frozenset()
    return get_kernel().policies.decide(
        roles=actor.roles or frozenset({actor.kind}), is_self=is_self, action=action,
        purpose=purpose, table=table, fields=fields, relations=relations,
    )


async def _relations(actor: Actor, person_id: uuid.UUID) -> frozenset[str]:
    if actor.kind != "staff":
        return frozenset()
    rows = await raw("SELECT owner_id, team FROM crm_person WHERE id = {}", person_id)
    if not rows:
        return frozenset()
    owner, team = rows[0]["owner_id"], rows[0]["team"]
    return frozenset({"assigned"} if owner is not None and str(owner) == actor.id else set()) | frozenset(
        {"team"} if team is not None and actor.team is not None and team == actor.team else set())


def _reach(actor: Actor, action: str, purpose: str, fields: Iterable[str]) -> tuple[str, list[Any], frozenset[str]]:
    """The SQL condition that keeps a list or search to the people this actor may see at all
    (record scope, in the query itself), its arguments, and the relations it grants."""
    reach = get_kernel().policies.reach(roles=actor.roles or frozenset({actor.kind}), action=action,
                                        purpose=purpose, table=PERSON, fields=fields)
    if "all" in reach:
        return "1 = 1", [], frozenset()
    clauses: list[str] = []
    args: list[object] = []
    if "assigned" in reach and _is_uuid(actor.id):
        clauses.append("p.owner_id = {}")
        args.append(uuid.UUID(actor.id))
    if "team" in reach and actor.team:
        clauses.append("p.team = {}")
        args.append(actor.team)
    return ("(" + " OR ".join(clauses) + ")" if clauses else "1 = 0"), args, reach


def _summary(decisions: Mapping[str, FieldDecision]) -> dict[str, str]:
    return {f: f"{d.effect} by {d.rule}" for f, d in decisions.items()}


async def _audit(actor: Actor, entry: Entry) -> None:
    await append(actor, entry, get_kernel().policies.version)


async def _denied(actor: Actor, action: str, table: str, purpose: str,
                  decisions: Mapping[str, FieldDecision], subject: uuid.UUID | None = None) -> PolicyDenied:
    """Record the denial (its own transaction) and return the error to raise.

    The refused attempt names the person it aimed at, so they see it in their access log.
    """
    subjects: tuple[str, ...] = ()
    async with write_transaction():
        if subject is not None:
            rows = await Person.select(Person.pseudonym).where(Person.id == subject)
            subjects = tuple(str(r["pseudonym"]) for r in rows)
        await _audit(actor, Entry(action=action, entity=table, purpose=purpose, outcome="denied",
                                  subjects=subjects, fields=_summary(decisions)))
    refused = sorted(f for f, d in decisions.items() if d.effect == "deny")
    rules = sorted({decisions[f].rule for f in refused})
    return PolicyDenied(
        f"Your role ({actor.role}) may not {action} {table} field(s) {', '.join(refused)} "
        f"for purpose '{purpose}' (decided by {', '.join(rules)}). Ask an administrator if you need it."
    )


def _visible(decisions: Mapping[str, FieldDecision]) -> list[str]:
    return [f for f, d in decisions.items() if d.effect != "deny"]


def _open(dk: DataKey | None, table: str, row_id: uuid.UUID, row: Mapping[str, Any],
          decisions: Mapping[str, FieldDecision]) -> dict[str, str | None]:
    policies = get_kernel().policies
    values: dict[str, str | None] = {}
    for name, decision in decisions.items():
        if decision.effect == "deny":
            continue
        token = row.get(name)
        if token is None or dk is None:
            values[name] = None
            continue
        plain = decrypt_field(dk, table, name, row_id, token)
        values[name] = policies.mask(table, name, plain) if decision.effect == "mask" else plain
    return values


def _person_record(row: Mapping[str, Any], keys: Mapping[uuid.UUID, DataKey],
                   decisions: Mapping[str, FieldDecision]) -> Record:
    pid = _uuid(row["id"])
    return Record(
        id=pid,
        values=_open(keys.get(pid), PERSON, pid, row, decisions),
        effects={f: d.effect for f, d in decisions.items()},
        created_at=row.get("created_at"),
        extra={"organisation": row.get("organisation_name"), "updated_at": row.get("updated_at")},
    )


def _person_query(fields: Iterable[str], where: str) -> str:
    """People with their organisation's name and their wrapped data key, in one statement."""
    columns = ", ".join(f"p.{f}" for f in fields)
    return (f"SELECT p.id, p.pseudonym, p.created_at, p.updated_at, o.name AS organisation_name, {columns}, "
            f"{KEY_COLUMNS} FROM crm_person p LEFT JOIN crm_organisation o ON o.id = p.organisation "
            f"{key_join('p')} WHERE {where}")


async def person_pseudonym(actor: Actor, person_id: uuid.UUID) -> str:
    """The pseudonym audit events use for this person (no personal data; no event needed)."""
    if actor.kind == "customer" and not actor.is_self(person_id):
        raise PolicyDenied("Customers can only see their own access log.")
    rows = await Person.select(Person.pseudonym).where(Person.id == person_id)
    if not rows:
        raise NotFound("No person with this id; they may have been erased.")
    return str(rows[0]["pseudonym"])


async def get_person(actor: Actor, *, purpose: str, person_id: uuid.UUID) -> Record:
    relations = await _relations(actor, person_id)
    decisions = await _decide(actor, "read", purpose, PERSON, PERSON_FIELDS, person_id, relations)
    visible = _visible(decisions)
    if not visible:
        raise await _denied(actor, "read", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await raw(_person_query(visible, "p.id = {}"), person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        row = rows[0]
        revealed = await _apply_reveal_grants(actor, purpose, person_id, decisions, relations)
        await _audit(actor, Entry(action="read", entity=PERSON, purpose=purpose,
                                  subjects=(str(row["pseudonym"]),), fields=_summary(decisions)))
    record = _person_record(row, keys_from_rows(get_kernel().keys, rows), decisions)
    record.extra["revealed_until"] = revealed
    return record


async def _apply_reveal_grants(actor: Actor, purpose: str, person_id: uuid.UUID,
                               decisions: dict[str, FieldDecision],
                               relations: frozenset[str]) -> dict[str, dt.datetime]:
    """Masked fields this member of staff revealed a short while ago are shown in full until the grant
    ends, as long as the policy still lets them reveal the field; the audit event names the grant."""
    masked = [f for f, d in decisions.items() if d.effect == "mask"]
    if actor.kind != "staff" or not masked or not _is_uuid(actor.id):
        return {}
    grants = await RevealGrant.select(RevealGrant.field, RevealGrant.expires_at).where(
        (RevealGrant.staff_id == uuid.UUID(actor.id)) & (RevealGrant.person == person_id)
        & (RevealGrant.expires_at > _now()) & RevealGrant.field.is_in(masked))
    if not grants:
        return {}
    still = await _decide(actor, "reveal", purpose, PERSON, [g["field"] for g in grants], person_id, relations)
    revealed = {}
    for grant in grants:
        if still[grant["field"]].effect == "allow":
            decisions[grant["field"]] = FieldDecision("allow", f"reveal-grant by {still[grant['field']].rule}")
            revealed[grant["field"]] = grant["expires_at"]
    return revealed


def _cursor(row: Mapping[str, Any]) -> str:
    return f"{row['created_at'].astimezone(dt.UTC).isoformat()}|{row['id']}"


def _parse_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        at, rid = cursor.split("|", 1)
        return dt.datetime.fromisoformat(at), uuid.UUID(rid)
    except ValueError:
        raise Invalid({"after": "this page link is malformed; go back to the first page"}) from None


async def list_people(actor: Actor, *, purpose: str, after: str | None = None, limit: int = 25) -> Page:
    """Newest first, keyset paged on (created_at, id); one audit event names the page's subjects."""
    scope, args, reach = _reach(actor, "read", purpose, LIST_FIELDS)
    decisions = await _decide(actor, "read", purpose, PERSON, LIST_FIELDS, None, reach)
    visible = _visible(decisions)
    if not visible:
        raise await _denied(actor, "list", PERSON, purpose, decisions)
    where = scope
    if after:
        at, rid = _parse_cursor(after)
        where += " AND (p.created_at, p.id) < ({}, {})"  # row values use crm_person_keyset
        args = [*args, at, rid]
    sql = _person_query(visible, where) + f" ORDER BY p.created_at DESC, p.id DESC LIMIT {int(limit) + 1}"
    async with write_transaction():
        rows = await raw(sql, *args)
        page, more = rows[:limit], len(rows) > limit
        await _audit(actor, Entry(action="list", entity=PERSON, purpose=purpose,
                                  subjects=tuple(str(r["pseudonym"]) for r in page),
                                  fields=_summary(decisions)))
    keys = keys_from_rows(get_kernel().keys, page)
    return Page([_person_record(r, keys, decisions) for r in page], _cursor(page[-1]) if more else None)


async def find_people(actor: Actor, *, purpose: str, field: str, query: str) -> list[Record]:
    """Search by email, phone or name through blind indexes; every candidate is confirmed by
    decrypting it, so a truncated index (shared by several people) never returns a wrong person.
    A name query matches people whose names hold every token of the query."""
    scope, scope_args, reach = _reach(actor, "read", purpose, LIST_FIELDS)
    decisions = await _decide(actor, "read", purpose, PERSON, LIST_FIELDS, None, reach)
    searched = ["email"] if field == "email" else ["phone"] if field == "phone" else list(indexing.NAME_FIELDS)
    probe = await _decide(actor, "read", purpose, PERSON, searched, None, reach)
    if any(d.effect == "deny" for d in probe.values()):
        raise await _denied(actor, "search", PERSON, purpose, probe)
    fields = list(dict.fromkeys([*_visible(decisions), *searched]))
    if field in ("email", "phone"):
        wanted = indexing.normalised(field, query)
        values = indexing.lookup_values(field, query)
        where = f"p.{field}_index IN ({', '.join('{}' for _ in values)})"
        args: list[Any] = list(values)

        def matches(plain: Mapping[str, str | None]) -> bool:
            return plain.get(field) is not None and indexing.normalised(field, plain[field] or "") == wanted
    else:
        tokens = sorted(name_tokens(query))
        if not tokens:
            raise Invalid({"query": "type at least two letters of a name"})
        clauses, args = [], []
        for token in tokens:
            values = indexing.token_lookup(token)
            clauses.append("p.id IN (SELECT person FROM crm_person_token WHERE token_index IN ("
                           + ", ".join("{}" for _ in values) + "))")
            args.extend(values)
        where = " AND ".join(clauses)

        def matches(plain: Mapping[str, str | None]) -> bool:
            return set(tokens) <= name_tokens(*(plain.get(f) for f in indexing.NAME_FIELDS))
    async with write_transaction():
        # No ORDER BY: the planner must use the index lookup, not walk the keyset index by date.
        rows = await raw(_person_query(fields, f"{scope} AND {where}") + " LIMIT 200", *scope_args, *args)
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        keys = keys_from_rows(get_kernel().keys, rows)
        confirmed = []
        for r in rows:
            pid = _uuid(r["id"])
            dk = keys.get(pid)
            if dk is not None and matches({f: decrypt_field(dk, PERSON, f, pid, r[f]) if r[f] else None
                                           for f in searched}):
                confirmed.append(r)
        await _audit(actor, Entry(action="search", entity=PERSON, purpose=purpose,
                                  subjects=tuple(str(r["pseudonym"]) for r in confirmed),
                                  fields={f"{field}_index": "lookup", **_summary(decisions)}))
    return [_person_record(r, keys, decisions) for r in confirmed[:50]]


def _check_write(decisions: Mapping[str, FieldDecision]) -> bool:
    return all(d.effect == "allow" for d in decisions.values())


def _sealed(dk: DataKey, row_id: uuid.UUID, values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Column name -> token (or None), plus the blind-index columns of the fields present."""
    sealed: dict[str, str | None] = {
        name: None if value in (None, "") else encrypt_field(dk, PERSON, name, row_id, value)
        for name, value in values.items()
    }
    sealed.update(indexing.column_indexes(values))
    return sealed


async def _replace_tokens(person_id: uuid.UUID, names: Mapping[str, str | None]) -> None:
    await raw("DELETE FROM crm_person_token WHERE person = {}", person_id)
    await insert_many(PersonToken._meta.tablename, ["person", "token_index"], indexing.token_rows(person_id, names))


async def create_person(actor: Actor, *, purpose: str, values: Mapping[str, str | None],
                        organisation_id: uuid.UUID | None = None) -> uuid.UUID:
    return (await import_people(actor, purpose=purpose, rows=[values], organisation_ids=[organisation_id],
                                action="create"))[0]


async def import_people(actor: Actor, *, purpose: str, rows: Sequence[Mapping[str, str | None]],
                        organisation_ids: Sequence[uuid.UUID | None] | None = None,
                        action: str = "import") -> list[uuid.UUID]:
    """Create many people in one transaction with one audit event naming them all."""
    fields = sorted({name for row in rows for name in row})
    unknown = set(fields) - set(PERSON_FIELDS)
    if unknown:
        raise Invalid({f: "not a field of a person" for f in sorted(unknown)})
    # What a member of staff creates is theirs and their team's.
    decisions = await _decide(actor, "write", purpose, PERSON, fields, None, frozenset({"assigned", "team"}))
    if not _check_write(decisions):
        raise await _denied(actor, action, PERSON, purpose, decisions)
    orgs = list(organisation_ids) if organisation_ids is not None else [None] * len(rows)
    ids = [uuid.uuid4() for _ in rows]
    pseudonyms = [uuid.uuid4() for _ in rows]
    now = _now()
    async with write_transaction():
        keys = await create_subject_keys(get_kernel().keys, ids)
        owner = uuid.UUID(actor.id) if actor.kind == "staff" and _is_uuid(actor.id) else None
        columns = ["id", "pseudonym", "organisation", "owner_id", "team", "created_at", "updated_at",
                   *PERSON_FIELDS, "email_index", "phone_index"]
        people, tokens = [], []
        for pid, pseudonym, org, values in zip(ids, pseudonyms, orgs, rows):
            sealed = _sealed(keys[pid], pid, values)
            people.append((pid, pseudonym, org, owner, actor.team, now, now,
                           *[sealed.get(c) for c in columns[7:]]))
            tokens.extend(indexing.token_rows(pid, values))
        await insert_many(Person._meta.tablename, columns, people)
        await insert_many(PersonToken._meta.tablename, ["person", "token_index"], tokens)
        await _audit(actor, Entry(action=action, entity=PERSON, purpose=purpose,
                                  subjects=tuple(str(p) for p in pseudonyms), fields=_summary(decisions)))
    return ids


async def update_person(actor: Actor, *, purpose: str, person_id: uuid.UUID,
                        changes: Mapping[str, str | None]) -> None:
    unknown = set(changes) - set(PERSON_FIELDS)
    if unknown:
        raise Invalid({f: "not a field of a person" for f in sorted(unknown)})
    if not changes:
        return
    decisions = await _decide(actor, "write", purpose, PERSON, changes.keys(), person_id)
    if not _check_write(decisions):
        raise await _denied(actor, "update", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await Person.select(Person.pseudonym, *[getattr(Person, f) for f in indexing.NAME_FIELDS]).where(
            Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        keys = await load_data_keys(get_kernel().keys, [person_id])
        if person_id not in keys:
            raise NotFound("This person's data key is gone (erased); nothing can be written.")
        dk = keys[person_id]
        sealed = {getattr(Person, c): v for c, v in _sealed(dk, person_id, changes).items()}
        await Person.update({**sealed, Person.updated_at: _now()}).where(Person.id == person_id)
        if any(f in changes for f in indexing.NAME_FIELDS):
            names = {f: changes[f] if f in changes else
                     (decrypt_field(dk, PERSON, f, person_id, rows[0][f]) if rows[0][f] else None)
                     for f in indexing.NAME_FIELDS}
            await _replace_tokens(person_id, names)
        await _audit(actor, Entry(action="update", entity=PERSON, purpose=purpose,
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))


async def reveal_field(actor: Actor, *, purpose: str, person_id: uuid.UUID, field: str, reason: str) -> str:
    """One deliberate step for a sensitive field: the reason is required and recorded."""
    if field not in PERSON_FIELDS:
        raise Invalid({"field": f"'{field}' is not a field of a person"})
    if not reason.strip():
        raise Invalid({"reason": "say why you need to see this value; the reason is recorded"})
    decisions = await _decide(actor, "reveal", purpose, PERSON, [field], person_id)
    if decisions[field].effect != "allow":
        raise await _denied(actor, "reveal", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await Person.select(Person.pseudonym, getattr(Person, field)).where(Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        await _audit(actor, Entry(action="reveal", entity=PERSON, purpose=purpose, reason=reason.strip()[:200],
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
        if actor.kind == "staff" and _is_uuid(actor.id):
            staff_id = uuid.UUID(actor.id)
            await RevealGrant.delete().where((RevealGrant.staff_id == staff_id) & (RevealGrant.person == person_id)
                                             & (RevealGrant.field == field))
            await RevealGrant.insert(RevealGrant(
                staff_id=staff_id, person=person_id, field=field,
                expires_at=_now() + dt.timedelta(minutes=get_settings().reveal_minutes)))
        keys = await load_data_keys(get_kernel().keys, [person_id])
    token = rows[0][field]
    if token is None or person_id not in keys:
        return ""
    return decrypt_field(keys[person_id], PERSON, field, person_id, token)


async def add_note(actor: Actor, *, purpose: str, person_id: uuid.UUID, body: str) -> uuid.UUID:
    decisions = await _decide(actor, "write", purpose, NOTE, ["body"], person_id)
    if not _check_write(decisions):
        raise await _denied(actor, "create", NOTE, purpose, decisions, person_id)
    note_id = uuid.uuid4()
    async with write_transaction():
        rows = await Person.select(Person.pseudonym).where(Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased.")
        keys = await load_data_keys(get_kernel().keys, [person_id])
        token = encrypt_field(_note_key(keys, person_id), NOTE, "body", note_id, body)
        await Note.insert(Note(id=note_id, person=person_id, author_id=uuid.UUID(actor.id) if _is_uuid(actor.id)
                               else uuid.UUID(int=0), body=token, created_at=_now()))
        await _audit(actor, Entry(action="create", entity=NOTE, purpose=purpose,
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
    return note_id


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _note_key(keys: Mapping[uuid.UUID, DataKey], person_id: uuid.UUID) -> DataKey:
    if person_id not in keys:
        raise NotFound("This person's data key is gone (erased); notes cannot be written or read.")
    return keys[person_id]


async def list_notes(actor: Actor, *, purpose: str, person_id: uuid.UUID, limit: int = 50) -> list[Record]:
    decisions = await _decide(actor, "read", purpose, NOTE, ["body"], person_id)
    if not _visible(decisions):
        raise await _denied(actor, "read", NOTE, purpose, decisions, person_id)
    async with write_transaction():
        person = await Person.select(Person.pseudonym).where(Person.id == person_id)
        if not person:
            raise NotFound("No person with this id; they may have been erased.")
        rows = await Note.select(Note.id, Note.body, Note.author_id, Note.created_at).where(
            Note.person == person_id).order_by(Note.created_at, ascending=False).limit(limit)
        await _audit(actor, Entry(action="read", entity=NOTE, purpose=purpose,
                                  subjects=(str(person[0]["pseudonym"]),), fields=_summary(decisions)))
        keys = await load_data_keys(get_kernel().keys, [person_id])
    records = []
    for row in rows:
        nid = _uuid(row["id"])
        dk = _note_key(keys, person_id)
        records.append(Record(id=nid, values=_open(dk, NOTE, nid, {"body": row["body"]}, decisions),
                              effects={"body": decisions["body"].effect}, created_at=row["created_at"],
                              extra={"author_id": str(row["author_id"])}))
    return records


async def erase_person(actor: Actor, *, purpose: str, person_id: uuid.UUID,
                       also: Callable[[uuid.UUID], Awaitable[None]] | None = None) -> None:
    """Crypto-shred a person: the ledger entry first, then key, index entries, notes and row, at once.

    `also` runs in the same transaction (other areas' records of the person, e.g. accounts).
    The audit event keeps only the pseudonym, whose link to the person goes with the row.
    """
    decisions = await _decide(actor, "erase", purpose, PERSON, PERSON_FIELDS, person_id)
    if not _check_write(decisions):
        raise await _denied(actor, "erase", PERSON, purpose, decisions, person_id)
    async with write_transaction():
        rows = await Person.select(Person.pseudonym).where(Person.id == person_id)
        if not rows:
            raise NotFound("No person with this id; they may have been erased already.")
        await _audit(actor, Entry(action="erase", entity=PERSON, purpose=purpose,
                                  subjects=(str(rows[0]["pseudonym"]),), fields=_summary(decisions)))
        if also is not None:
            await also(person_id)
        record_erasure(get_settings().erasure_ledger, get_kernel().keys, person_id)
        await shred_subjects([person_id])


async def shred_subjects(person_ids: Sequence[uuid.UUID]) -> None:
    """Delete what the vault and the CRM hold of these people (used by erasure and by restore)."""
    async with write_transaction():
        await shred_subject_keys(person_ids)
        await Note.delete().where(Note.person.is_in(list(person_ids)))
        await PersonToken.delete().where(PersonToken.person.is_in(list(person_ids)))
        await RevealGrant.delete().where(RevealGrant.person.is_in(list(person_ids)))
        await Person.delete().where(Person.id.is_in(list(person_ids)))
