"""What every people operation shares: decisions, relations, record scope, audit, opening tokens."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry, append
from server.crm.tables import Person
from server.db import raw, write_transaction
from server.errors import PolicyDenied
from server.gateway.records import Record
from server.kernel import get_kernel
from server.policy import FieldDecision
from server.vault.cipher import DataKey, decrypt_field
from server.vault.store import KEY_COLUMNS, key_join

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
    return _row_relations(actor, rows[0]["owner_id"], rows[0]["team"])


def _row_relations(actor: Actor, owner: Any, team: Any) -> frozenset[str]:
    """How a member of staff relates to one person: "assigned" (they own them), "team" (their team serves them)."""
    if actor.kind != "staff":
        return frozenset()
    return frozenset({"assigned"} if owner is not None and str(owner) == actor.id else set()) | frozenset(
        {"team"} if team is not None and actor.team is not None and team == actor.team else set())


def _reach(actor: Actor, action: str, purpose: str, fields: Iterable[str]) -> tuple[str, list[Any], frozenset[str]]:
    """The SQL condition that keeps a list or search to the people this actor may see at all
    (record scope, in the query itself), its arguments, and the reach: {"all"} or the relations that
    admit a row."""
    reach = get_kernel().policies.reach(roles=actor.roles or frozenset({actor.kind}), action=action,
                                        purpose=purpose, table=PERSON, fields=fields)
    if "all" in reach:
        return "1 = 1", [], reach
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
    """People with their owner and team (their relations to the viewer), their organisation's name and
    their wrapped data key, in one statement."""
    columns = ", ".join(f"p.{f}" for f in fields)
    return (f"SELECT p.id, p.pseudonym, p.owner_id, p.team, p.created_at, p.updated_at, "
            f"o.name AS organisation_name, {columns}, "
            f"{KEY_COLUMNS} FROM crm_person p LEFT JOIN crm_organisation o ON o.id = p.organisation "
            f"{key_join('p')} WHERE {where}")


def _check_write(decisions: Mapping[str, FieldDecision]) -> bool:
    return all(d.effect == "allow" for d in decisions.values())


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
