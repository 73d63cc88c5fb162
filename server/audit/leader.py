"""The sequencer's leader on PostgreSQL: one app process per deployment chains pending events promptly.

Every app process runs `run()` in its lifespan (beside the anchor timer). It tries a session advisory lock
on a connection of its own; the process that holds it polls audit_pending with a cheap one-row read,
backing off from 2 to 50 ms while idle, and calls `integrate` when a row is there. The others retry the
lock every second, so when the leader dies (its connection, and with it the lock, goes) another takes
over within about a second. Requests send no NOTIFY: a notifying commit takes a cluster-wide lock, the
very serialisation audit_pending removes. Correctness never depends on leadership: any integrator takes
the head lock first, and readers that need every event call `flush()` themselves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from server.audit.sequencer import PENDING, integrate
from server.db import engine, is_sqlite, raw
from server.settings import get_settings

log = logging.getLogger("mutual.audit")

LOCK_KEY = 0x6D75_7475_616C_0001
"""pg_try_advisory_lock key of the sequencer ("mutual" and 1), the same in every process."""
FOLLOWER_RETRY_SECONDS = 1.0
POLL_MIN_SECONDS, POLL_MAX_SECONDS = 0.002, 0.050
_task: asyncio.Task[None] | None = None
is_leader = False
"""Whether this process holds the lock now (for tests and the status output)."""


async def check_durable_commits() -> None:
    """Refuse to start when a commit could return before it is on disk: an audit event must be durable
    before the data it records is shown."""
    if is_sqlite():
        return
    rows = await raw("SHOW synchronous_commit")
    value = str(rows[0]["synchronous_commit"]).lower() if rows else ""
    if value == "off":
        raise RuntimeError("PostgreSQL synchronous_commit is off for Mutual's connections, so a recorded audit "
                           "event could be lost after the data was shown; remove synchronous_commit=off from "
                           "the server, database or role settings (ALTER ROLE … RESET synchronous_commit)")


async def _lead(conn: Any) -> None:
    """Holding the lock: poll and integrate until cancelled or the connection fails."""
    global is_leader
    is_leader = True
    wait = POLL_MIN_SECONDS
    try:
        while True:
            if await conn.fetchval(f"SELECT id FROM {PENDING} ORDER BY id LIMIT 1") is not None:
                await integrate()
                wait = POLL_MIN_SECONDS
                continue
            await asyncio.sleep(wait)
            wait = min(wait * 2, POLL_MAX_SECONDS)
    finally:
        is_leader = False


async def run() -> None:
    """Until cancelled: take the lock when free and lead; retry every second otherwise or after an error."""
    while True:
        try:
            conn = await asyncpg.connect(**engine().config)  # type: ignore[attr-defined]
            try:
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                    await asyncio.sleep(FOLLOWER_RETRY_SECONDS)
                await _lead(conn)
            finally:
                conn.terminate()  # ending the session frees the advisory lock
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a lost connection or a busy database: try again in a second
            log.exception("audit sequencer: leading failed; retrying in %s s", FOLLOWER_RETRY_SECONDS)
            await asyncio.sleep(FOLLOWER_RETRY_SECONDS)


def start() -> None:
    """Start this process's sequencer task (once): PostgreSQL in background mode only, since SQLite chains
    every event before `record` returns and eager mode chains in the recording call."""
    global _task
    if is_sqlite() or get_settings().audit_sequencer != "background" or _task is not None:
        return
    _task = asyncio.get_running_loop().create_task(run(), name="audit-sequencer")


async def stop() -> None:
    global _task
    if _task is not None:
        _task.cancel()
        try:
            await _task
        except asyncio.CancelledError:
            pass
        _task = None
