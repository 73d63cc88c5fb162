"""The gateway's one seam to the audit: every event of every operation is recorded here.

A read selects its rows first, records its event, and decrypts only once `record` has returned: no
data leaves the gateway before its event is durable. The select and the record are not one
transaction, which is what lets concurrent reads share one commit."""

from __future__ import annotations

from collections.abc import Sequence

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

