"""Sequencing recorded events: audit_pending rows are numbered, chained and moved into audit_event.

On PostgreSQL a request records its events as audit_pending rows (no shared lock), and an integrator
chains them later under the head lock. A pending row is deleted only in the transaction that inserts its
chained form, so a process that dies after recording leaves the row for the next integrator, and an
integrator that fails leaves everything as it was. Any process may integrate: the head lock serialises
integrators, so correctness never depends on which process leads (server.audit.leader).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from server.audit.chain import Head, VerifyResult, chain_rows, lock_head
from server.audit.format import HASHED_FIELDS
from server.db import engine, insert_many, is_sqlite, raw, write_transaction
from server.settings import get_settings

PENDING = "audit_pending"
PENDING_COLUMNS = HASHED_FIELDS[1:]
"""Every hashed field but seq, which the sequencer assigns."""


async def add_pending(rows: Sequence[Mapping[str, Any]]) -> None:
    """Record event rows (as chain._row makes them): in the caller's open transaction, or, outside one,
    as one multi-row INSERT that commits on its own (one round trip, durable when it returns)."""
    if engine().current_transaction.get() is not None:
        await insert_many(PENDING, PENDING_COLUMNS, [tuple(row[c] for c in PENDING_COLUMNS) for row in rows])
        return
    marks = ", ".join("(" + ", ".join("{}" for _ in PENDING_COLUMNS) + ")" for _ in rows)
    await raw(f"INSERT INTO {PENDING} ({', '.join(PENDING_COLUMNS)}) VALUES {marks}",
              *[row[c] for row in rows for c in PENDING_COLUMNS])


async def _take(limit: int | None) -> list[dict[str, Any]]:
    """The oldest pending rows (all of them when limit is None), deleted in the caller's transaction by
    their ids: a row committed meanwhile with a lower id is neither taken nor deleted."""
    bound = "" if limit is None else f" LIMIT {int(limit)}"
    rows = await raw(f"SELECT id, {', '.join(PENDING_COLUMNS)} FROM {PENDING} ORDER BY id{bound}")
    if not rows:
        return []
    ids = [int(r["id"]) for r in rows]
    if is_sqlite():
        await raw(f"DELETE FROM {PENDING} WHERE id IN (SELECT value FROM json_each({{}}))", json.dumps(ids))
    else:
        await raw(f"DELETE FROM {PENDING} WHERE id = ANY({{}}::bigint[])", ids)
    return [{c: r[c] for c in PENDING_COLUMNS} for r in rows]


async def integrate_locked(head: Head, limit: int | None) -> Head:
    """Under the head lock, in the caller's transaction: chain the oldest pending rows. Returns the new head."""
    rows = await _take(limit)
    if not rows:
        return head
    _, moved = await chain_rows(head, rows)
    return moved


async def integrate(limit: int = 1000) -> int:
    """One transaction: lock the head, chain up to `limit` of the oldest pending rows (each keeps the time
    it was recorded), delete them, sign a checkpoint when one is due. Returns how many were chained."""
    async with write_transaction():
        head = await lock_head()
        moved = await integrate_locked(head, limit)
        return moved.seq - head.seq


async def has_pending() -> bool:
    return bool(await raw(f"SELECT id FROM {PENDING} ORDER BY id LIMIT 1"))


async def flush(limit: int = 1000) -> int:
    """Chain every event recorded before this call; returns how many. Cheap when nothing is pending (one
    read, no write transaction)."""
    total = 0
    while await has_pending():
        done = await integrate(limit)
        total += done
        if done < limit:
            break
    return total


@dataclasses.dataclass(frozen=True)
class PendingStatus:
    count: int
    oldest_seconds: float | None
    """Age of the oldest pending row; None when there is none."""


async def pending_status() -> PendingStatus:
    rows = await raw(f"SELECT COUNT(*) AS n, MIN(at) AS oldest FROM {PENDING}")
    count, oldest = int(rows[0]["n"]), rows[0]["oldest"]
    if not count or oldest is None:
        return PendingStatus(0, None)
    if isinstance(oldest, str):
        oldest = dt.datetime.fromisoformat(oldest)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return PendingStatus(count, max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds()))


@dataclasses.dataclass(frozen=True)
class PendingVerifyResult(VerifyResult):
    """A verification that also reports what was recorded but not yet sequenced when it began."""

    pending: int = 0
    pending_oldest_seconds: float | None = None


def stale_problem(status: PendingStatus, max_seconds: float) -> str:
    """The problem to report when the oldest pending event waited longer than allowed ('' otherwise)."""
    if status.oldest_seconds is None or status.oldest_seconds <= max_seconds:
        return ""
    return (f"{status.count} audit event(s) recorded but not sequenced for {status.oldest_seconds:.0f} s "
            f"(over MUTUAL_AUDIT_PENDING_MAX_SECONDS={max_seconds:g}): is the sequencer running? Each app "
            "process on PostgreSQL runs one; `mutual audit verify` has sequenced them now")


async def checked(verify: Callable[..., Awaitable[VerifyResult]], *args: Any, **kwargs: Any) -> PendingVerifyResult:
    """Run `verify` after sequencing what is pending; fail when an event had waited too long for the
    sequencer. The pending count and age are those found before sequencing."""
    status = await pending_status()
    if status.count:
        await flush()
    result = await verify(*args, **kwargs)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(VerifyResult)}
    problem = stale_problem(status, get_settings().audit_pending_max_seconds)
    if result.ok and problem:
        fields.update(ok=False, problem=problem)
    return PendingVerifyResult(**fields, pending=status.count, pending_oldest_seconds=status.oldest_seconds)
