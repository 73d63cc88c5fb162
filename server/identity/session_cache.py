"""A per-process cache of resumed sessions, cleared whenever the session generation moves.

`resume_session` runs on every request of both faces. This process keeps the row its query returned,
keyed by the face and the token's hash (never the token), in an LRU of at most `MAX_ENTRIES`, each entry
for at most `MUTUAL_SESSION_CACHE_SECONDS` (a safety net). What keeps it right is the session generation:
database triggers bump `identity_session_generation` on every change that can end a session or change
its actor, whichever process (or hand-typed SQL) makes it. A task in each app process polls the value
every `POLL_SECONDS` and clears the cache when it moved; on PostgreSQL a LISTEN on the trigger's
notification clears it sooner. Code of this process that makes such a change also calls `invalidate()`,
which clears at once and again after its transaction commits, so its very next request reads the database.

Hits are served only while the poller keeps up (`STALE_AFTER`): a process whose poller is not running
(a command, a test without the app's lifespan) or cannot read the database never trusts an entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from server.db import after_commit, raw
from server.settings import get_settings
from server.tasks import ProcessTask

log = logging.getLogger("mutual.sessions")

MAX_ENTRIES = 10_000
POLL_SECONDS = 0.1
STALE_AFTER = 1.0
"""Seconds after the last successful poll during which entries may be used."""
GENERATION_QUERY = "SELECT value FROM identity_session_generation WHERE id = 1"
CHANNEL = "identity_session_generation"
"""The PostgreSQL triggers also NOTIFY here; delivered at commit."""


class SessionCache:
    """An LRU of session rows with a lifetime; `epoch` counts clears, so a lookup that read the database
    before a clear does not store what it read after it."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.epoch = 0
        self._entries: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()
        self._trusted_until = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._entries)

    def rows(self) -> list[dict[str, Any]]:
        return [row for _, row in self._entries.values()]

    def trust(self, seconds: float) -> None:
        """The generation was just read: entries may be used for `seconds` from now."""
        self._trusted_until = time.monotonic() + seconds

    def distrust(self) -> None:
        self._trusted_until = 0.0

    def get(self, face: str, token_hash: str) -> dict[str, Any] | None:
        lifetime = get_settings().session_cache_seconds
        now = time.monotonic()
        if lifetime <= 0 or now >= self._trusted_until:
            return None
        key = (face, token_hash)
        found = self._entries.get(key)
        if found is None:
            return None
        if now - found[0] >= lifetime:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, face: str, token_hash: str, row: dict[str, Any], epoch: int) -> None:
        """Keep `row`, read while the cache was at `epoch`; dropped when a clear came in between."""
        if epoch != self.epoch or get_settings().session_cache_seconds <= 0:
            return
        key = (face, token_hash)
        self._entries[key] = (time.monotonic(), dict(row))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def touch(self, face: str, token_hash: str, last_seen_at: Any) -> None:
        found = self._entries.get((face, token_hash))
        if found is not None:
            found[1]["last_seen_at"] = last_seen_at

    def forget(self, face: str, token_hash: str) -> None:
        self._entries.pop((face, token_hash), None)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()


cache = SessionCache()


def invalidate() -> None:
    """This process changed a session or an account: clear now, and again once the write transaction open
    in this task commits (a request served in between may have read the row as it was before)."""
    cache.clear()
    after_commit(cache.clear)


class GenerationPoller:
    """Reads the session generation every `interval` seconds and clears `target` when it moved."""

    def __init__(self, target: SessionCache, interval: float = POLL_SECONDS) -> None:
        self.target = target
        self.interval = interval
        self.seen: object = object()  # nothing read yet: the first value clears
        self._task = ProcessTask("session-generation-poll")

    async def poll(self) -> None:
        try:
            rows = await raw(GENERATION_QUERY)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a busy or unreachable database: trust nothing until it answers
            self.target.distrust()
            self.target.clear()
            log.exception("session generation unreadable; the session cache is off until it is readable")
            return
        value = rows[0]["value"] if rows else None
        if value != self.seen:
            self.target.clear()
            self.seen = value
        self.target.trust(STALE_AFTER)

    async def run(self) -> None:
        listener = await self._listen()
        try:
            while True:
                await self.poll()
                await asyncio.sleep(self.interval)
        finally:
            if listener is not None:
                await listener.close()

    async def _listen(self) -> Any:
        """PostgreSQL: a connection of its own that LISTENs for the triggers' notification, so a change
        clears the cache as soon as it commits rather than at the next poll. None on SQLite, or when it
        cannot connect (the poll alone then keeps the cache right, only up to one interval later)."""
        settings = get_settings()
        if not settings.is_postgres:
            return None
        import asyncpg

        try:
            conn = await asyncpg.connect(settings.database_url)
            await conn.add_listener(CHANNEL, lambda *_: self.target.clear())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("session generation: no LISTEN connection (%s); relying on the poll", type(exc).__name__)
            return None
        return conn

    def start(self) -> None:
        if get_settings().session_cache_seconds > 0:
            self._task.start(self.run)

    async def stop(self) -> None:
        self.target.distrust()
        self.target.clear()
        await self._task.stop()


poller = GenerationPoller(cache)


def start() -> None:
    """Start polling in this process (once), unless MUTUAL_SESSION_CACHE_SECONDS is 0."""
    poller.start()


async def stop() -> None:
    await poller.stop()
