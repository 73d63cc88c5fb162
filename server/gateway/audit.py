"""The gateway's one seam to the audit: every event of every operation is recorded here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from server.actor import Actor
from server.audit.chain import Entry, append_many
from server.db import write_transaction
from server.kernel import get_kernel


async def record(actor: Actor, entries: Sequence[Entry]) -> None:
    """Record the events, in the caller's transaction (a write) or in one of their own (a read or a
    denial). It returns only once they are durable or part of the caller's transaction, so a read
    decrypts nothing whose event could still be lost."""
    async with write_transaction():
        await append_many([(actor, e) for e in entries], get_kernel().policies.version)


@contextlib.asynccontextmanager
async def reading() -> AsyncIterator[None]:
    """Where a read selects its rows and records its event: one write transaction, so the event is
    recorded with the rows it names; the values are decrypted only after it has committed."""
    async with write_transaction():
        yield
