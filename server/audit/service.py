"""Reading the audit: a customer's own access log and the compliance console."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from server import gateway
from server.actor import Actor
from server.audit.chain import Entry, VerifyResult, append, verify_database
from server.audit.tables import AuditEvent, AuditSubject
from server.db import write_transaction
from server.errors import PolicyDenied
from server.kernel import get_kernel


@dataclass(frozen=True)
class EventView:
    seq: int
    at: Any
    face: str
    actor_kind: str
    actor_id: str
    role: str
    action: str
    entity: str
    fields: dict[str, str]
    purpose: str
    reason: str
    outcome: str
    subjects: list[str]


def _view(row: dict[str, Any]) -> EventView:
    return EventView(
        seq=int(row["seq"]), at=row["at"], face=row["face"], actor_kind=row["actor_kind"],
        actor_id=row["actor_id"], role=row["role"], action=row["action"], entity=row["entity"],
        fields=json.loads(row["fields"] or "{}"), purpose=row["purpose"], reason=row["reason"],
        outcome=row["outcome"], subjects=json.loads(row["subjects"] or "[]"),
    )


async def my_access_log(actor: Actor, *, before: int | None = None, limit: int = 50) -> list[EventView]:
    """Events about the signed-in customer's own record, newest first (staff and their own)."""
    if actor.kind != "customer" or actor.person_id is None:
        raise PolicyDenied("Only a signed-in customer has an own access log.")
    pseudonym = await gateway.person_pseudonym(actor, actor.person_id)
    seqs = AuditSubject.select(AuditSubject.seq).where(AuditSubject.pseudonym == uuid.UUID(pseudonym))
    query = AuditEvent.select().where(AuditEvent.seq.is_in(seqs))
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = await query.order_by(AuditEvent.seq, ascending=False).limit(limit)
    return [_view(r) for r in rows]


def _require_compliance(actor: Actor) -> None:
    if actor.kind != "staff" or "compliance" not in actor.roles:
        raise PolicyDenied("The audit console is for the compliance role; ask an administrator for it.")


async def list_events(actor: Actor, *, before: int | None = None, limit: int = 50) -> list[EventView]:
    """The compliance console's page of events, newest first; viewing it is itself recorded."""
    _require_compliance(actor)
    query = AuditEvent.select()
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    async with write_transaction():
        rows = await query.order_by(AuditEvent.seq, ascending=False).limit(limit)
        await append(actor, Entry(action="view", entity="audit_event", purpose="compliance_audit"),
                     get_kernel().policies.version)
    return [_view(r) for r in rows]


async def verify(actor: Actor) -> VerifyResult:
    _require_compliance(actor)
    return await verify_database()
