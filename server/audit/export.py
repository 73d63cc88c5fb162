"""Writing a provable JSON Lines export: every seq from the first kept event to the export's own, in full
or (left out by a filter) as its digest, then the checkpoints and the head signed at export time."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from server.audit.checkpoints import _view
from server.audit.export_verify import EXPORT_EVENT_FIELDS, EXPORT_FORMAT
from server.audit.format import content_digest, iso, row_text
from server.db import raw

MAX_CHECKPOINTS = 1_000
"""Stored checkpoints an export carries at most (evenly spread, the anchor always): the signed head proves
the whole file; these only narrow down where a rewrite starts."""

Fetch = Callable[[int, int, int], Awaitable[list[dict[str, Any]]]]
"""(after seq, until seq, batch size) -> the next rows in ascending seq, unfiltered."""


def matcher(filters: Any, pseudonyms: Sequence[str] | None) -> Callable[[Mapping[str, Any]], bool]:
    """The console's filters (start, end, actor_id, action, purpose; the person as pseudonyms) as a test
    of one row: the same conditions the SQL filter applies."""
    start = dt.datetime.combine(filters.start, dt.time(), tzinfo=dt.UTC) if filters.start else None
    end = dt.datetime.combine(filters.end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) if filters.end else None
    wanted = None if pseudonyms is None else set(pseudonyms)

    def match(row: Mapping[str, Any]) -> bool:
        at = row["at"] if isinstance(row["at"], dt.datetime) else dt.datetime.fromisoformat(row["at"])
        return ((start is None or at >= start) and (end is None or at < end)
                and (not filters.actor_id or row["actor_id"] == filters.actor_id)
                and (not filters.action or row["action"] == filters.action)
                and (not filters.purpose or row["purpose"] == filters.purpose)
                and (wanted is None or not wanted.isdisjoint(json.loads(row["subjects"] or "[]"))))

    return match


def _event(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "event", **{c: row[c] for c in EXPORT_EVENT_FIELDS}, "seq": int(row["seq"]),
            "at": iso(row["at"]), "format_version": int(row["format_version"])}


def _proof(row: Mapping[str, Any]) -> list[Any]:
    """What proves an event left out: its content digest (format 2), or its links (format 1, whose hash
    cannot be recomputed without its content)."""
    if int(row["format_version"]) == 1:
        return [1, row["prev_hash"], row["hash"]]
    return [int(row["format_version"]), content_digest(row_text(row))]


def _lines(rows: Sequence[Mapping[str, Any]], match: Callable[[Mapping[str, Any]], bool]) -> str:
    out: list[str] = []
    left_out: list[list[Any]] = []
    left_from = 0
    for row in rows:
        if match(row):
            if left_out:
                out.append(json.dumps({"kind": "omitted", "seq": left_from, "events": left_out}))
                left_out = []
            out.append(json.dumps(_event(row)))
        else:
            if not left_out:
                left_from = int(row["seq"])
            left_out.append(_proof(row))
    if left_out:
        out.append(json.dumps({"kind": "omitted", "seq": left_from, "events": left_out}))
    return "".join(line + "\n" for line in out)


async def _checkpoints(first: int, until: int) -> list[dict[str, Any]]:
    rows = await raw("SELECT seq, hash, at, key_id, public_key, signature, format_version, log_id "
                     "FROM audit_checkpoint WHERE seq >= {} AND seq <= {} ORDER BY seq", first - 1, until)
    found = [_view(r) for r in rows]
    if len(found) <= MAX_CHECKPOINTS:
        return found
    step = len(found) / (MAX_CHECKPOINTS - 1)
    keep = {0, len(found) - 1, *(int(i * step) for i in range(MAX_CHECKPOINTS - 1))}
    return [found[i] for i in sorted(keep)]


async def first_seq() -> int:
    rows = await raw("SELECT MIN(seq) AS s FROM audit_event")
    return int(rows[0]["s"]) if rows and rows[0]["s"] is not None else 1


async def jsonl(header: Mapping[str, Any], head: Mapping[str, Any], fetch: Fetch, batch: int,
                match: Callable[[Mapping[str, Any]], bool]) -> AsyncIterator[str]:
    """The file in chunks: the header line, one chunk per batch of rows, the end line."""
    first, until = await first_seq(), int(head["seq"])
    yield json.dumps({"kind": "header", "format": EXPORT_FORMAT, **header, "log_id": head["log_id"],
                      "first_seq": first}) + "\n"
    after = first - 1
    while after < until:
        rows = await fetch(after, until, batch)
        if not rows:
            break
        yield _lines(rows, match)
        after = int(rows[-1]["seq"])
    yield json.dumps({"kind": "end", "checkpoints": await _checkpoints(first, until), "head": dict(head)}) + "\n"
