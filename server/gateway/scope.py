"""What one request has already read of its subjects: pseudonym, owner, team and wrapped data key.

Every gateway SELECT returns these columns with its rows; a later step of the same request (the
notes under a person, a note added to them) takes them from here instead of asking again. The
cache lives for one request only (like unwrapped data keys, DESIGN §3) and a write or an erasure
of the subject drops its entry.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

SUBJECT_COLUMNS = ("subject_id", "pseudonym", "rel_assigned", "rel_team", "dk_key_id", "dk_kek_id", "dk_wrapped")

_SUBJECTS: contextvars.ContextVar[dict[uuid.UUID, dict[str, Any]] | None] = contextvars.ContextVar(
    "mutual_request_subjects", default=None)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    token = _SUBJECTS.set({})
    try:
        yield
    finally:
        _SUBJECTS.reset(token)


def _id(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def remember(rows: Iterable[Mapping[str, Any]]) -> None:
    """Keep the subject columns of rows a gateway query returned (only inside a request scope)."""
    cache = _SUBJECTS.get()
    if cache is None:
        return
    for row in rows:
        if row.get("subject_id") is not None and "pseudonym" in row:
            cache[_id(row["subject_id"])] = {c: row.get(c) for c in SUBJECT_COLUMNS}


def known(subject_id: uuid.UUID) -> dict[str, Any] | None:
    cache = _SUBJECTS.get()
    return None if cache is None else cache.get(subject_id)


def forget(subject_ids: Iterable[uuid.UUID]) -> None:
    cache = _SUBJECTS.get()
    if cache is not None:
        for sid in subject_ids:
            cache.pop(sid, None)
