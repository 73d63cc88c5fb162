"""Reveal reasons as the audit records them: a code from policies/purposes.yml, an optional ticket
reference, and an optional note sealed under the person's data key.

The reason is part of the hash-chained event, which outlives the person: a free-text reason would
keep whatever a member of staff typed (a name, a diagnosis) in clear text for as long as the chain.
So the event holds only `<code> [ticket=<ref>] [note=<token>]`: the code is one of a fixed list, the
ticket reference is too short and too plain to carry a sentence, and the note is AES-GCM ciphertext
under the subject's data key. Erasure destroys that key, so the note is shredded while the event and
its hash stay as they were: the chain still verifies.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from server.errors import Invalid
from server.vault.cipher import DataKey, DecryptionFailed, decrypt_field, encrypt_field

TICKET = re.compile(r"[A-Za-z0-9._#/-]{1,40}")
"""A ticket reference: up to 40 letters, digits and . _ # / - (no spaces), with at least one digit."""
NOTE_MAX = 200
NOTE_TABLE, NOTE_COLUMN = "audit_event", "reason"
"""Where a note's ciphertext is bound (with the subject's id): it does not decrypt anywhere else."""


@dataclass(frozen=True, repr=False)
class GivenReason:
    """A reason as a member of staff gave it, validated; the note still in clear text (never logged)."""

    code: str
    ticket: str
    note: str

    def __repr__(self) -> str:
        return f"GivenReason(code={self.code!r}, ticket={self.ticket!r}, note=<{len(self.note)} characters>)"


@dataclass(frozen=True)
class Reason:
    """A reveal reason as stored: the code, the ticket reference, the note's ciphertext (or "")."""

    code: str
    ticket: str = ""
    note_token: str = ""


@dataclass(frozen=True)
class ReasonView:
    """A reveal reason as shown: the code's title, the ticket, and the note where it may be opened."""

    code: str
    title: str
    ticket: str
    has_note: bool
    note: str | None = None
    """The note in clear text, only for the person themself while their data key exists."""


def check(code: str, ticket: str, note: str, known: Mapping[str, str]) -> GivenReason:
    """The reason a form gave, validated; every problem is named with its fix (nothing stored yet)."""
    code, ticket, note = code.strip(), ticket.strip(), note.strip()
    errors: dict[str, str] = {}
    if not code:
        errors["reason"] = "say why you need to see this value; choose a reason (it is recorded)"
    elif code not in known:
        errors["reason"] = f"unknown reason '{code[:40]}'; choose one of: {', '.join(known)}"
    if ticket and (not TICKET.fullmatch(ticket) or not any(c.isdigit() for c in ticket)):
        errors["ticket"] = ("a ticket reference is up to 40 letters, digits and . _ # / - with at least one "
                            "digit and no spaces, e.g. T-4711; put anything else in the note")
    if len(note) > NOTE_MAX:
        errors["note"] = f"is {len(note)} characters long; keep the note under {NOTE_MAX}"
    if errors:
        raise Invalid(errors)
    return GivenReason(code, ticket, note)


def seal(reason: GivenReason, dk: DataKey) -> str:
    """The text the audit event records: the note (if any) encrypted under the subject's data key."""
    parts = [reason.code]
    if reason.ticket:
        parts.append(f"ticket={reason.ticket}")
    if reason.note:
        parts.append("note=" + encrypt_field(dk, NOTE_TABLE, NOTE_COLUMN, dk.subject_id, reason.note))
    return " ".join(parts)


def parse(text: str, known: Mapping[str, str]) -> Reason | None:
    """A recorded reason, or None for any other text (e.g. a free-text reason from before codes)."""
    code, *rest = text.split(" ") if text else [""]
    if code not in known:
        return None
    found: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key not in ("ticket", "note") or key in found or not value:
            return None
        found[key] = value
    return Reason(code, found.get("ticket", ""), found.get("note", ""))


def describe(text: str, known: Mapping[str, str]) -> str:
    """A recorded reason in words for staff: the code's title, the ticket, and whether a sealed note is
    there (never the note's ciphertext); any other text as recorded."""
    reason = parse(text, known)
    if reason is None:
        return text
    parts = [known[reason.code]]
    if reason.ticket:
        parts.append(f"ticket {reason.ticket}")
    if reason.note_token:
        parts.append("note sealed for the person")
    return " · ".join(parts)


def open_note(reason: Reason, dk: DataKey | None, subject_id: uuid.UUID) -> str | None:
    """The note in clear text, or None when there is none or it cannot be opened (the key is shredded)."""
    if not reason.note_token or dk is None or dk.subject_id != subject_id:
        return None
    try:
        return decrypt_field(dk, NOTE_TABLE, NOTE_COLUMN, subject_id, reason.note_token)
    except DecryptionFailed:
        return None
