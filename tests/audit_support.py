"""Helpers of the audit write-path tests: the background sequencer mode, and real failures injected by
triggers (SQLite and PostgreSQL variants) into the tables an event is written to."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from server.actor import Actor
from server.audit.chain import Entry
from server.db import is_sqlite, raw
from server.settings import get_settings

REFUSAL = "audit store refuses the event"


@pytest.fixture
def background() -> Iterator[None]:
    """MUTUAL_AUDIT_SEQUENCER=background for one test (the suite runs eager)."""
    saved = os.environ.get("MUTUAL_AUDIT_SEQUENCER")
    os.environ["MUTUAL_AUDIT_SEQUENCER"] = "background"
    get_settings.cache_clear()
    yield
    if saved is None:
        os.environ.pop("MUTUAL_AUDIT_SEQUENCER", None)
    else:
        os.environ["MUTUAL_AUDIT_SEQUENCER"] = saved
    get_settings.cache_clear()


async def refuse_inserts(table: str, *, action: str | None = None) -> str:
    """A BEFORE INSERT trigger on `table` that raises (for rows of `action` only, when given); its name."""
    name = f"test_refuse_{table}"
    if is_sqlite():
        when = f" WHEN NEW.action = '{action}'" if action else ""
        await raw(f"CREATE TRIGGER {name} BEFORE INSERT ON {table}{when} "
                  f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")
    else:
        await raw(f"CREATE OR REPLACE FUNCTION test_refuse() RETURNS trigger AS $$ BEGIN "
                  f"RAISE EXCEPTION '{REFUSAL}'; END $$ LANGUAGE plpgsql")
        when = f" WHEN (NEW.action = '{action}')" if action else ""
        await raw(f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW{when} "
                  "EXECUTE FUNCTION test_refuse()")
    return name


async def drop_trigger(name: str, table: str) -> None:
    await raw(f"DROP TRIGGER IF EXISTS {name}" + ("" if is_sqlite() else f" ON {table}"))


Refuse = Callable[..., Awaitable[None]]


@pytest.fixture
async def refuse(db: None) -> AsyncIterator[Refuse]:
    """`await refuse(table, action=None)` installs a refusing trigger; every one is dropped afterwards."""
    made: list[tuple[str, str]] = []

    async def install(table: str, *, action: str | None = None) -> None:
        made.append((await refuse_inserts(table, action=action), table))

    yield install
    for name, table in made:
        await drop_trigger(name, table)


def reader(n: int | str) -> Actor:
    return Actor(kind="system", id=f"reader-{n}", face="cli")


def read_entry(action: str = "read") -> Entry:
    return Entry(action=action, entity="crm_person", purpose="customer_service", subjects=(str(uuid.uuid4()),))


async def chained() -> list[dict[str, Any]]:
    return await raw("SELECT seq, actor_id, action, at FROM audit_event ORDER BY seq")


async def pending_count() -> int:
    return int((await raw("SELECT COUNT(*) AS n FROM audit_pending"))[0]["n"])
