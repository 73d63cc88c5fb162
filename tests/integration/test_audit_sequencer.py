"""Recorded events are sequenced into one contiguous chain: by flush, by the leader, and after a crash."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib

import pytest

from server.audit import flush, leader, record
from server.audit.chain import _row, append, verify_database
from server.audit.sequencer import PendingVerifyResult, add_pending, integrate, pending_status
from server.db import engine, is_sqlite, raw, write_transaction
from tests.audit_support import background, chained, pending_count, read_entry, reader

__all__ = ["background"]  # fixture
sequencer = importlib.import_module("server.audit.sequencer")


async def _recorded_not_sequenced(n: int, *, ago: float = 0.0, actor: str = "crashed") -> None:
    """What a process leaves that died after its pending rows committed and before anyone integrated them."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago)
    async with write_transaction():
        await add_pending([_row(reader(actor), read_entry(), "v1", at) for _ in range(n)])


async def test_records_from_several_tasks_flush_into_contiguous_seqs(db: None, background: None) -> None:
    async def task(n: int) -> None:
        for _ in range(5):
            await record([(reader(n), read_entry())], "v1")

    await asyncio.gather(*(task(n) for n in range(8)))
    if not is_sqlite():
        assert await pending_count() == 40  # background: nothing chained yet
    flushed = await flush()

    assert flushed == (0 if is_sqlite() else 40)
    events = await chained()
    assert [int(e["seq"]) for e in events] == list(range(1, 41))
    assert {e["actor_id"]: sum(1 for x in events if x["actor_id"] == e["actor_id"]) for e in events} == {
        f"reader-{n}": 5 for n in range(8)}
    assert await pending_count() == 0
    result = await verify_database()
    assert result.ok, result.problem


async def test_rows_left_by_a_crash_before_integration_are_taken_by_the_next_integrate(
    db: None, background: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await record([(reader("first"), read_entry())], "v1")
    await flush()
    await _recorded_not_sequenced(3, ago=5)

    async def dies(*args: object) -> None:
        raise RuntimeError("the integrator's process died mid-way")

    monkeypatch.setattr(sequencer, "chain_rows", dies)
    with pytest.raises(RuntimeError, match="died"):
        await integrate()
    assert await pending_count() == 3  # a pending row goes only with the transaction that chains it
    monkeypatch.undo()

    assert await integrate() == 3
    events = await chained()
    assert [(int(e["seq"]), e["actor_id"]) for e in events] == [
        (1, "reader-first"), (2, "reader-crashed"), (3, "reader-crashed"), (4, "reader-crashed")]
    for event in events[1:]:  # the time the request recorded it, not the time it was sequenced
        at = event["at"] if isinstance(event["at"], dt.datetime) else dt.datetime.fromisoformat(event["at"])
        assert dt.datetime.now(dt.UTC) - at > dt.timedelta(seconds=4)
    assert await pending_count() == 0
    assert (await verify_database()).ok


async def test_append_chains_pending_events_first_on_postgresql(db: None, background: None) -> None:
    if is_sqlite():
        pytest.skip("SQLite chains every record before it returns; append_many drains pending on PostgreSQL")
    await _recorded_not_sequenced(3)
    seq = await append(reader("sign-in"), read_entry("sign_in"), "v1")
    assert seq == 4
    assert await pending_count() == 0
    assert [e["actor_id"] for e in await chained()] == ["reader-crashed"] * 3 + ["reader-sign-in"]


async def test_verify_reports_pending_and_fails_when_the_oldest_waited_too_long(db: None, background: None) -> None:
    await _recorded_not_sequenced(1)
    fresh = await verify_database()
    assert isinstance(fresh, PendingVerifyResult)
    assert fresh.ok, fresh.problem
    assert fresh.pending == 1

    await _recorded_not_sequenced(2, ago=120)
    stale = await verify_database()
    assert isinstance(stale, PendingVerifyResult)
    assert not stale.ok
    assert "recorded but not sequenced for 12" in stale.problem
    assert "is the sequencer running?" in stale.problem
    assert stale.pending == 2
    assert (await pending_status()).count == 0  # verification sequenced them
    again = await verify_database()
    assert isinstance(again, PendingVerifyResult)
    assert again.ok and again.pending == 0
    assert [int(e["seq"]) for e in await chained()] == [1, 2, 3]


async def test_the_leader_sequences_recorded_events_without_a_flush(db: None, background: None) -> None:
    if is_sqlite():
        pytest.skip("the sequencer leader runs on PostgreSQL")
    leader.start()
    try:
        for n in range(5):
            await record([(reader(n), read_entry())], "v1")
        for _ in range(250):
            if await pending_count() == 0 and len(await chained()) == 5:
                break
            await asyncio.sleep(0.02)
        assert leader.is_leader
    finally:
        await leader.stop()
    assert [int(e["seq"]) for e in await chained()] == [1, 2, 3, 4, 5]
    assert await pending_count() == 0
    assert (await verify_database()).ok


async def test_start_up_refuses_commits_that_may_return_before_they_are_durable(db: None) -> None:
    if is_sqlite():
        pytest.skip("synchronous_commit is PostgreSQL's setting")
    await leader.check_durable_commits()
    with pytest.raises(RuntimeError, match="synchronous_commit is off"):
        async with engine().transaction():
            await raw("SET LOCAL synchronous_commit = off")
            await leader.check_durable_commits()
