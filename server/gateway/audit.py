"""The gateway's one seam to the audit: every event of every operation is recorded here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from server import timing
from server.actor import Actor
from server.audit.chain import Entry
from server.audit.record import record as record_events
from server.kernel import get_kernel


async def record(actor: Actor, entries: Sequence[Entry]) -> None:
    """Record the events: in the caller's write transaction (they commit with the write), or, for a
    read or a denial, on their own: SQLite's group commit shares one transaction with the reads of
    other requests, PostgreSQL queues them for the sequencer. It returns only once they are durable,
    so a read decrypts nothing whose event could still be lost."""
    with timing.phase("audit"):
        await record_events([(actor, e) for e in entries], get_kernel().policies.version)


@contextlib.asynccontextmanager
async def reading() -> AsyncIterator[None]:
    """Where a read records what it selected. The rows are selected first; their values are decrypted
    only after `record` has returned, so no data leaves the gateway before its event is durable. Not a
    transaction of its own: that is what lets concurrent reads share one commit."""
    yield
