"""Reading the audit: a customer's own access log, the compliance console and its streamed exports."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server import gateway
from server.actor import Actor
from server.audit import export, flush
from server.audit.chain import Entry, VerifyResult, _iso, append, verify_database
from server.audit.checkpoints import signed_head
from server.audit.tables import AuditEvent, AuditSubject
from server.db import write_transaction
from server.errors import Invalid, PolicyDenied
from server.identity.tables import StaffAccount
from server.kernel import get_kernel

AUDIT_PURPOSE = "compliance_audit"
ACTIONS = ("create", "erase", "export", "list", "read", "restore", "reveal", "rotate_index", "search",
           "signin", "signout", "update", "view")
"""Every action the apps record, for the filter forms."""
EXPORT_BATCH = 2_000
"""Rows read per query while streaming an export: memory stays bounded however long the chain is."""
EXPORT_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
ACCESS_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
EVENT_COLUMNS = ("seq", "at", "request_id", "face", "actor_kind", "actor_id", "role", "action", "entity",
                 "subjects", "fields", "purpose", "reason", "policy_version", "outcome", "prev_hash", "hash",
                 "format_version")
ACCESS_COLUMNS = ("at", "who", "action", "entity", "fields", "purpose", "reason", "outcome")


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
    actor_name: str = ""
    """The staff member's handle, only where policy lets the customer see it (else empty)."""


@dataclass(frozen=True)
class AuditFilters:
    """The non-personal filters of the console, the exports and the access log (all optional)."""

    start: dt.date | None = None
    """First day included (UTC)."""
    end: dt.date | None = None
    """Last day included (UTC)."""
    actor_id: str = ""
    action: str = ""
    purpose: str = ""

    @classmethod
    def parse(cls, values: Mapping[str, str | None]) -> AuditFilters:
        """From form or query values (`from`, `to`, `actor`, `action`, `purpose`); every problem is named."""
        errors: dict[str, str] = {}
        days: dict[str, dt.date | None] = {}
        for key in ("from", "to"):
            text = (values.get(key) or "").strip()
            try:
                days[key] = dt.date.fromisoformat(text) if text else None
            except ValueError:
                days[key] = None
                errors[key] = f"'{text[:20]}' is not a date; use YYYY-MM-DD"
        action = (values.get("action") or "").strip()
        if action and action not in ACTIONS:
            errors["action"] = f"unknown action '{action[:20]}'; known: {', '.join(ACTIONS)}"
        purpose = (values.get("purpose") or "").strip()
        if purpose and purpose not in get_kernel().policies.purposes:
            errors["purpose"] = (f"unknown purpose '{purpose[:30]}'; known: "
                                 f"{', '.join(sorted(get_kernel().policies.purposes))}")
        start, end = days.get("from"), days.get("to")
        if start and end and end < start:
            errors["to"] = "the end date is before the start date; swap them"
        if errors:
            raise Invalid(errors)
        return cls(start=start, end=end, actor_id=(values.get("actor") or "").strip()[:64], action=action,
                   purpose=purpose)

    def as_params(self) -> dict[str, str]:
        """The filters set, by their form names: for links, export headers and the export's own event."""
        params = {"from": self.start.isoformat() if self.start else "", "to": self.end.isoformat() if self.end else "",
                  "actor": self.actor_id, "action": self.action, "purpose": self.purpose}
        return {k: v for k, v in params.items() if v}


@dataclass(frozen=True)
class Subjects:
    """The person filter resolved to pseudonyms: the email itself goes no further than the gateway."""

    pseudonyms: tuple[str, ...]


@dataclass(frozen=True)
class AuditExport:
    """A streamed file: its name, media type and the chunks of text to send."""

    filename: str
    media_type: str
    chunks: AsyncIterator[str]


def _view(row: dict[str, Any]) -> EventView:
    return EventView(
        seq=int(row["seq"]), at=row["at"], face=row["face"], actor_kind=row["actor_kind"],
        actor_id=row["actor_id"], role=row["role"], action=row["action"], entity=row["entity"],
        fields=json.loads(row["fields"] or "{}"), purpose=row["purpose"], reason=row["reason"],
        outcome=row["outcome"], subjects=json.loads(row["subjects"] or "[]"),
    )


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _filtered(query: Any, filters: AuditFilters, pseudonyms: Sequence[str] | None) -> Any:
    """The filters as SQL conditions on an AuditEvent select."""
    if filters.start is not None:
        query = query.where(AuditEvent.at >= _midnight(filters.start))
    if filters.end is not None:
        query = query.where(AuditEvent.at < _midnight(filters.end + dt.timedelta(days=1)))
    if filters.actor_id:
        query = query.where(AuditEvent.actor_id == filters.actor_id)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.purpose:
        query = query.where(AuditEvent.purpose == filters.purpose)
    if pseudonyms is not None:
        seqs = AuditSubject.select(AuditSubject.seq).where(
            AuditSubject.pseudonym.is_in([uuid.UUID(p) for p in pseudonyms]))
        query = query.where(AuditEvent.seq.is_in(seqs))
    return query


async def _own_pseudonym(actor: Actor) -> str:
    if actor.kind != "customer" or actor.person_id is None:
        raise PolicyDenied("Only a signed-in customer has an own access log.")
    return await gateway.person_pseudonym(actor, actor.person_id)


async def my_access_log(actor: Actor, *, filters: AuditFilters | None = None, before: int | None = None,
                        limit: int = 50) -> list[EventView]:
    """Events about the signed-in customer's own record, newest first (staff and their own)."""
    pseudonym = await _own_pseudonym(actor)
    await flush()  # events recorded a moment ago (this very page's own reads among them) are shown too
    query = _filtered(AuditEvent.select(), filters or AuditFilters(), [pseudonym])
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = await query.order_by(AuditEvent.seq, ascending=False).limit(limit)
    return await _with_staff_names([_view(r) for r in rows])


async def _with_staff_names(events: list[EventView]) -> list[EventView]:
    """Staff handles for the customer's log, when access.yml lets customers read
    identity_staff_account.username for self_service; by default it does not: roles only."""
    decision = get_kernel().policies.decide(
        # is_self: the customer is reading the log of their own record
        roles=frozenset({"customer"}), is_self=True, action="read", purpose="self_service",
        table="identity_staff_account", fields=["username"])["username"]
    ids = {e.actor_id for e in events if e.actor_kind == "staff"}
    if decision.effect != "allow" or not ids:
        return events
    valid = []
    for actor_id in ids:
        try:
            valid.append(uuid.UUID(actor_id))
        except ValueError:
            continue
    rows = await StaffAccount.select(StaffAccount.id, StaffAccount.username).where(StaffAccount.id.is_in(valid))
    names = {str(r["id"]): r["username"] for r in rows}
    return [dataclasses.replace(e, actor_name=names.get(e.actor_id, "")) if e.actor_kind == "staff" else e
            for e in events]


def _who(event: EventView) -> str:
    """Who, as the customer is told: the role, and the staff handle where policy allows it."""
    if event.actor_kind == "customer":
        return "You"
    if event.actor_kind == "staff":
        return f"{event.actor_name} (staff, {event.role})" if event.actor_name else f"Staff ({event.role})"
    return event.actor_kind


def _access_record(event: EventView) -> dict[str, Any]:
    return {"at": _iso(event.at), "who": _who(event), "action": event.action, "entity": event.entity,
            "fields": sorted(event.fields), "purpose": event.purpose, "reason": event.reason,
            "outcome": event.outcome}


async def my_access_log_download(actor: Actor, file_format: str, filters: AuditFilters) -> AuditExport:
    """The customer's own access log as CSV or JSON, oldest first, read in keyset batches. Reading one's
    own log is not an access to personal data, so nothing is recorded."""
    if file_format not in ACCESS_MEDIA_TYPES:
        raise Invalid({"format": f"unknown format '{file_format[:20]}'; use one of: {', '.join(ACCESS_MEDIA_TYPES)}"})
    pseudonym = await _own_pseudonym(actor)
    exported_at = dt.datetime.now(dt.UTC)

    async def events() -> AsyncIterator[list[EventView]]:
        async for rows in _batches(filters, [pseudonym], None):
            yield await _with_staff_names([_view(r) for r in rows])

    async def as_csv() -> AsyncIterator[str]:
        yield _csv_rows([ACCESS_COLUMNS])
        async for batch in events():
            records = [_access_record(e) for e in batch]
            yield _csv_rows([[*(r[c] for c in ACCESS_COLUMNS[:4]), " ".join(r["fields"]),
                              *(r[c] for c in ACCESS_COLUMNS[5:])] for r in records])

    async def as_json() -> AsyncIterator[str]:
        head = {"format": "mutual-access-log/1", "exported_at": _iso(exported_at), "filters": filters.as_params()}
        yield json.dumps(head)[:-1] + ', "events": ['
        first = True
        async for batch in events():
            for event in batch:
                yield ("" if first else ", ") + json.dumps(_access_record(event))
                first = False
        yield "]}\n"

    name = f"mutual-access-log-{exported_at:%Y-%m-%d}.{file_format}"
    return AuditExport(name, ACCESS_MEDIA_TYPES[file_format], as_csv() if file_format == "csv" else as_json())


def _require_compliance(actor: Actor) -> None:
    if actor.kind != "staff" or "compliance" not in actor.roles:
        raise PolicyDenied("The audit console is for the compliance role; ask an administrator for it.")


def purposes() -> dict[str, str]:
    """The purposes of the running policies (id -> English title), for the filter forms."""
    found = get_kernel().policies.purposes
    return {key: found[key].title_en for key in sorted(found)}


async def find_subjects(actor: Actor, email: str) -> Subjects:
    """The person filter: who has this email, found through the gateway's blind index (the search is
    recorded there, naming whom it found) and handed on only as pseudonyms."""
    _require_compliance(actor)
    email = email.strip()
    if not email:
        raise Invalid({"person": "type the person's email address"})
    found = await gateway.find_people(actor, purpose=AUDIT_PURPOSE, field="email", query=email)
    return Subjects(tuple([await gateway.person_pseudonym(actor, p.id) for p in found]))


async def list_events(actor: Actor, *, filters: AuditFilters | None = None, subjects: Subjects | None = None,
                      before: int | None = None, limit: int = 50) -> list[EventView]:
    """The compliance console's page of events, newest first; viewing it is itself recorded (naming the
    person filtered by, so their own access log shows that their audit trail was looked at)."""
    _require_compliance(actor)
    if subjects is not None and not subjects.pseudonyms:
        return []  # nobody has that email: nothing shown, so nothing viewed
    filters = filters or AuditFilters()
    await flush()
    query = _filtered(AuditEvent.select(), filters, subjects.pseudonyms if subjects else None)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    async with write_transaction():
        rows = await query.order_by(AuditEvent.seq, ascending=False).limit(limit)
        await append(actor, Entry(action="view", entity="audit_event", purpose=AUDIT_PURPOSE,
                                  subjects=subjects.pseudonyms if subjects else (), fields=_filter_fields(filters)),
                     get_kernel().policies.version)
    return [_view(r) for r in rows]


def _filter_fields(filters: AuditFilters) -> dict[str, str]:
    params = filters.as_params()
    return {"filters": json.dumps(params, sort_keys=True)} if params else {}


async def verify(actor: Actor) -> VerifyResult:
    _require_compliance(actor)
    return await verify_database()


async def _fetch_batch(filters: AuditFilters, pseudonyms: Sequence[str] | None, after: int,
                       until: int | None, size: int) -> list[dict[str, Any]]:
    """One keyset batch in ascending seq: one query, at most `size` rows."""
    query = _filtered(AuditEvent.select(*(getattr(AuditEvent, c) for c in EVENT_COLUMNS)), filters, pseudonyms)
    query = query.where(AuditEvent.seq > after)
    if until is not None:
        query = query.where(AuditEvent.seq <= until)
    return list(await query.order_by(AuditEvent.seq).limit(size))


async def _batches(filters: AuditFilters, pseudonyms: Sequence[str] | None,
                   until: int | None) -> AsyncIterator[list[dict[str, Any]]]:
    after, size = 0, EXPORT_BATCH
    while True:
        rows = await _fetch_batch(filters, pseudonyms, after, until, size)
        if rows:
            yield rows
        if len(rows) < size:
            return
        after = int(rows[-1]["seq"])


def _export_event(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "event", **{c: row[c] for c in EVENT_COLUMNS}, "seq": int(row["seq"]), "at": _iso(row["at"])}


def _csv_rows(rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


async def export_events(actor: Actor, file_format: str, *, filters: AuditFilters | None = None,
                        subjects: Subjects | None = None) -> AuditExport:
    """Events in ascending seq as CSV or JSON Lines, streamed in keyset batches. The export is recorded
    before the first byte is sent (the person filter as pseudonyms, never the email); it covers the
    events up to and including its own."""
    _require_compliance(actor)
    if file_format not in EXPORT_MEDIA_TYPES:
        raise Invalid({"format": f"unknown format '{file_format[:20]}'; use one of: {', '.join(EXPORT_MEDIA_TYPES)}"})
    filters = filters or AuditFilters()
    pseudonyms = subjects.pseudonyms if subjects else None
    params = filters.as_params()
    policy_version = get_kernel().policies.version
    fields = {"format": file_format, "filters": json.dumps(params, sort_keys=True)}
    if subjects is not None:
        fields["person"] = "pseudonyms in subjects"
    await flush()  # append below also chains what is pending; flushing first keeps its transaction short
    async with write_transaction():
        until = await append(actor, Entry(action="export", entity="audit_event", purpose=AUDIT_PURPOSE,
                                          subjects=pseudonyms or (), fields=fields), policy_version)
        head = await signed_head() if file_format == "jsonl" else None
    exported_at = dt.datetime.now(dt.UTC)

    async def unfiltered(after: int, last: int, size: int) -> list[dict[str, Any]]:
        return await _fetch_batch(AuditFilters(), None, after, last, size)

    def jsonl() -> AsyncIterator[str]:
        assert head is not None  # the export's own event is in the chain
        header = {"exported_at": _iso(exported_at), "filters": params, "person": subjects is not None,
                  "policy_version": policy_version}
        everything = not params and pseudonyms is None
        return export.jsonl(header, head, unfiltered, EXPORT_BATCH,
                            (lambda row: True) if everything else export.matcher(filters, pseudonyms))

    async def as_csv() -> AsyncIterator[str]:
        yield _csv_rows([EVENT_COLUMNS])
        if pseudonyms != ():
            async for rows in _batches(filters, pseudonyms, until):
                yield _csv_rows([[event[c] for c in EVENT_COLUMNS] for event in map(_export_event, rows)])

    name = f"mutual-audit-{exported_at:%Y-%m-%d}.{file_format}"
    return AuditExport(name, EXPORT_MEDIA_TYPES[file_format], jsonl() if file_format == "jsonl" else as_csv())
