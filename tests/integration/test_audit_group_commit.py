"""Concurrent audited reads share one commit on SQLite, and one batch that cannot be written fails alone."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.audit import flush, record
from server.audit.chain import verify_database
from server.db import is_sqlite, raw, write_transaction
from tests.audit_support import REFUSAL, Refuse, background, chained, pending_count, read_entry, reader, refuse

__all__ = ["background", "refuse"]  # fixtures
# The module, not the function the package exports under the same name.
record_module = importlib.import_module("server.audit.record")


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the write transactions the recording module commits."""
    done: list[int] = []
    real = record_module.write_transaction

    @contextlib.asynccontextmanager
    async def counting() -> AsyncIterator[Any]:
        async with real() as txn:
            yield txn
        done.append(1)

    monkeypatch.setattr(record_module, "write_transaction", counting)
    return done


async def test_sixteen_concurrent_reads_on_sqlite_share_fewer_commits_and_all_chain(
    db: None, background: None, commits: list[int],
) -> None:
    if not is_sqlite():
        pytest.skip("group commit is SQLite's path; PostgreSQL records pending rows")
    entries = [read_entry() for _ in range(16)]
    await asyncio.gather(*(record([(reader(n), entry)], "v1") for n, entry in enumerate(entries)))

    assert 0 < len(commits) < 16
    events = await chained()
    assert [int(e["seq"]) for e in events] == list(range(1, 17))
    assert {e["actor_id"] for e in events} == {f"reader-{n}" for n in range(16)}
    subjects = await raw("SELECT pseudonym, seq FROM audit_subject")
    assert {str(s["pseudonym"]) for s in subjects} == {e.subjects[0] for e in entries}
    result = await verify_database()
    assert result.ok, result.problem


async def test_a_batch_that_cannot_be_written_fails_its_caller_and_not_the_others(
    db: None, background: None, refuse: Refuse,
) -> None:
    await refuse("audit_event" if is_sqlite() else "audit_pending", action="poison")
    calls = [record([(reader(n), read_entry("poison" if n == 7 else "read"))], "v1") for n in range(16)]
    results = await asyncio.gather(*calls, return_exceptions=True)

    failed = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [7]
    assert REFUSAL in str(results[7])
    await flush()
    events = await chained()
    assert [int(e["seq"]) for e in events] == list(range(1, 16))
    assert {e["actor_id"] for e in events} == {f"reader-{n}" for n in range(16) if n != 7}
    assert await pending_count() == 0
    assert (await verify_database()).ok


async def test_a_record_inside_a_transaction_commits_with_it_and_never_waits_on_the_committer(
    db: None, background: None,
) -> None:
    async with write_transaction():
        await asyncio.wait_for(record([(reader("in"), read_entry())], "v1"), timeout=10)
    with contextlib.suppress(RuntimeError):
        async with write_transaction():
            await record([(reader("rolled-back"), read_entry())], "v1")
            raise RuntimeError("the write fails after recording")
    await flush()
    assert [e["actor_id"] for e in await chained()] == ["reader-in"]
    assert await pending_count() == 0


async def test_events_of_one_call_keep_their_order_and_subjects(db: None, background: None) -> None:
    entries = [read_entry() for _ in range(3)]
    await record([(reader("one"), e) for e in entries], "v1")
    await flush()
    rows = await raw("SELECT seq, subjects FROM audit_event ORDER BY seq")
    assert [json.loads(r["subjects"]) for r in rows] == [list(e.subjects) for e in entries]
