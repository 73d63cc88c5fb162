"""The compliance role's record of processing activities: viewing and downloading it, each recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from server.actor import Actor
from server.audit.chain import Entry, append
from server.errors import Invalid, PolicyDenied
from server.kernel import get_kernel
from server.policy.record import processing_record, record_csv, record_json

ENTITY = "processing_record"
FILENAME = "mutual-record-of-processing"
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


@dataclass(frozen=True)
class Download:
    """A file to hand over as an attachment."""

    filename: str
    media_type: str
    content: str


def _require_compliance(actor: Actor) -> None:
    if actor.kind != "staff" or "compliance" not in actor.roles:
        raise PolicyDenied("The record of processing is for the compliance role; ask an administrator for it.")


async def processing_record_for(actor: Actor, action: Literal["view", "export"] = "view") -> dict[str, Any]:
    """The record generated from the running policies; who looked at it (or exported it) is recorded."""
    _require_compliance(actor)
    policies = get_kernel().policies
    await append(actor, Entry(action=action, entity=ENTITY, purpose="compliance_audit"), policies.version)
    return processing_record(policies)


async def processing_record_download(actor: Actor, file_format: str) -> Download:
    """The record as a JSON or CSV file; an unknown format is refused before anything is recorded."""
    _require_compliance(actor)
    if file_format not in MEDIA_TYPES:
        raise Invalid({"format": f"unknown format '{file_format[:20]}'; use one of: {', '.join(MEDIA_TYPES)}"})
    record = await processing_record_for(actor, "export")
    content = record_json(record) if file_format == "json" else record_csv(record)
    return Download(f"{FILENAME}.{file_format}", MEDIA_TYPES[file_format], content)
