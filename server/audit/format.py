"""How an audit event is hashed, in each format version, and the instant's canonical text."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq", "at", "request_id", "face", "actor_kind", "actor_id", "role", "action", "entity",
    "subjects", "fields", "purpose", "reason", "policy_version", "outcome",
)
SEPARATOR = "\x1f"  # ASCII unit separator: never inside a stored value (append strips it)
EVENT_FORMAT = 2
"""The format new events are written in. 1: sha256(prev ‖ fields). 2: sha256(format line ‖ log id ‖ prev ‖
sha256(fields)), so an event from another log never fits, and an export can prove an event it leaves out
by its content digest alone."""
EVENT_FORMATS = (1, 2)
EVENT_FORMAT_LINE = "mutual-audit-event/2"


def iso(at: dt.datetime | str) -> str:
    """The instant as hashed: UTC, microseconds, in the text form SQLite stores it (Piccolo's
    adapter writes str(utc_datetime)), so verifying a SQLite chain needs no date parsing."""
    if isinstance(at, str):
        if len(at) == 32:  # "YYYY-MM-DD HH:MM:SS.ffffff+00:00" as stored
            return at
        at = dt.datetime.fromisoformat(at)
    return f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}+00:00"


def content_text(seq: int | str, at_iso: str, rest: Sequence[str]) -> str:
    """The event's hashed fields joined: seq, instant, then HASHED_FIELDS[2:] in order."""
    return SEPARATOR.join((str(seq), at_iso, *rest))


def content_digest(text: str) -> str:
    """Format 2: the digest of an event's fields, which an export gives for an event it leaves out."""
    return hashlib.sha256(text.encode()).hexdigest()


def link(version: int, prev_hash: str, text: str, log_id: str) -> str:
    """The event's hash from the previous hash and its joined fields, in the event's format."""
    if version == 1:
        return hashlib.sha256(f"{prev_hash}{SEPARATOR}{text}".encode()).hexdigest()
    return link_digest(prev_hash, content_digest(text), log_id)


def link_digest(prev_hash: str, digest: str, log_id: str) -> str:
    """Format 2: the event's hash from the previous hash and its content digest."""
    return hashlib.sha256(SEPARATOR.join((EVENT_FORMAT_LINE, log_id, prev_hash, digest)).encode()).hexdigest()


def row_text(row: Mapping[str, Any]) -> str:
    return content_text(row["seq"], iso(row["at"]), [row[k] for k in HASHED_FIELDS[2:]])


def event_hash(prev_hash: str, row: Mapping[str, Any], log_id: str | None = None) -> str:
    """The hash of an event row in its own format (`format_version`, 1 when absent). Format 2 needs the
    log id: a row of another log, or without one, does not hash to its stored value."""
    version = int(row.get("format_version") or 1)
    if version not in EVENT_FORMATS:
        raise ValueError(f"unknown audit event format {version}; known: {', '.join(map(str, EVENT_FORMATS))}")
    if version == 2 and not log_id:
        raise ValueError("a format-2 audit event is hashed with its log id; pass log_id")
    return link(version, prev_hash, row_text(row), log_id or "")
