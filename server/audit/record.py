"""Recording audited events: durable before the caller goes on, without every request queueing on the head.

`record` returns only once its events are committed, and raises otherwise, so a gateway read that
decrypts after it returns never shows data whose access is not on record (fail-closed).

- Inside an open write transaction (gateway writes) the events commit with it: SQLite chains them inline;
  PostgreSQL adds audit_pending rows, which takes no shared lock.
- Outside one (gateway reads), SQLite hands them to this process's group committer: one task per event
  loop that drains whatever is queued (no timer, at most MAX_GROUP batches) and chains it all in one write
  transaction, one head read and update, one commit. PostgreSQL commits them as audit_pending rows in one
  short transaction of their own.

On PostgreSQL the sequencer (server.audit.sequencer, led by server.audit.leader) chains pending rows.
MUTUAL_AUDIT_SEQUENCER=eager chains them before `record` returns instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.actor import Actor
from server.audit.chain import Entry, _row, chain_rows, lock_head
from server.audit.sequencer import add_pending, flush, integrate_locked
from server.db import engine, is_sqlite, write_transaction
from server.settings import get_settings

__all__ = ["MAX_GROUP", "flush", "record"]

MAX_GROUP = 64
"""The most batches (record calls) one group commit takes."""


@dataclass
class _Batch:
    rows: list[dict[str, Any]]
    future: asyncio.Future[None]


class CommitterStopped(RuntimeError):
    """The group committer ended before it could say whether a batch was recorded."""


class _Committer:
    """SQLite: one per process and event loop. Callers wait on their batch's future, resolved after COMMIT."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: list[_Batch] = []
        self.inflight: list[_Batch] = []
        self.task: asyncio.Task[None] | None = None
        self.commits = 0
        """Group transactions committed (a measure for the bench and tests, not used for decisions)."""

    def submit(self, rows: list[dict[str, Any]]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self.queue.append(_Batch(rows, future))
        if self.task is None or self.task.done():
            # A fresh context: the committer must never join a caller's transaction.
            self.task = self.loop.create_task(self._run(), name="audit-group-commit", context=contextvars.Context())
        return future

    async def _commit(self, group: Sequence[_Batch]) -> None:
        async with write_transaction():
            await chain_rows(await lock_head(), [row for batch in group for row in batch.rows])
        self.commits += 1

    async def _run(self) -> None:
        try:
            while self.queue:
                self.inflight, self.queue = self.queue[:MAX_GROUP], self.queue[MAX_GROUP:]
                try:
                    await self._commit(self.inflight)
                except Exception as exc:  # noqa: BLE001 - each batch is retried alone and fails alone
                    if len(self.inflight) == 1:
                        _settle(self.inflight[0], exc)
                    else:
                        await self._one_by_one(self.inflight)
                else:
                    for batch in self.inflight:
                        _settle(batch, None)
                self.inflight = []
        finally:
            stopped = CommitterStopped("the audit group committer stopped before recording these events; "
                                       "nothing was shown: try again")
            for batch in [*self.inflight, *self.queue]:
                _settle(batch, stopped)

    async def _one_by_one(self, group: Sequence[_Batch]) -> None:
        """After a failed group: each batch alone, so one bad batch cannot fail the others."""
        for batch in group:
            try:
                await self._commit([batch])
            except Exception as exc:  # noqa: BLE001 - handed to that batch's caller
                _settle(batch, exc)
            else:
                _settle(batch, None)


def _settle(batch: _Batch, error: BaseException | None) -> None:
    if batch.future.done():  # its caller was cancelled
        return
    if error is None:
        batch.future.set_result(None)
    else:
        batch.future.set_exception(error)


_COMMITTERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Committer] = weakref.WeakKeyDictionary()


def committer() -> _Committer:
    loop = asyncio.get_running_loop()
    found = _COMMITTERS.get(loop)
    if found is None:
        found = _COMMITTERS[loop] = _Committer(loop)
    return found


async def record(events: Sequence[tuple[Actor, Entry]], policy_version: str) -> None:
    """Record `events` durably (see the module docstring); returns once they are committed, raises otherwise."""
    if not events:
        return
    now = dt.datetime.now(dt.UTC)
    rows = [_row(actor, entry, policy_version, now) for actor, entry in events]
    in_transaction = engine().current_transaction.get() is not None
    eager = get_settings().audit_sequencer == "eager"
    if is_sqlite():
        if in_transaction:
            await _chain_now(rows, drain=False)
        else:
            await committer().submit(rows)
    elif in_transaction and eager:
        await _chain_now(rows, drain=True)
    else:
        await add_pending(rows)  # one statement in autocommit: durable when it returns
        if eager:
            await flush()


async def _chain_now(rows: Sequence[Mapping[str, Any]], *, drain: bool) -> None:
    async with write_transaction():
        head = await lock_head()
        if drain:
            head = await integrate_locked(head, None)
        await chain_rows(head, rows)
