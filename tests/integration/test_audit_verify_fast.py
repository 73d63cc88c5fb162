"""The fast verification paths (whole batches, text joined by the database, a worker process for the
second half) give exactly the verdict, `checked`, `first_bad_seq` and problem of the slow reference:
every stored row fed one by one to ChainVerifier, in storage order."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from server.actor import system_actor
from server.audit import checkpoints, verify, verify_segment
from server.audit.chain import Entry, append_many, event_hash
from server.audit.format import EVENT_FORMAT, GENESIS, HASHED_FIELDS, link, row_text
from server.audit.signing import checkpoint_marks, trust
from server.audit.verifier import ChainVerifier, VerifyResult
from server.audit.verify_fast import PG_TEXT, SQLITE_TEXT
from server.db import insert_many, is_sqlite, raw, write_transaction

EVERY = 5
TOTAL = 23


@pytest.fixture(autouse=True)
def small_checkpoint_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY", EVERY)


async def _append(count: int) -> None:
    actor = system_actor("test")
    for n in range(count):
        await append_many([(actor, Entry(action="read", entity="crm_person", purpose="customer_service",
                                         reason="Prüfung ✓" if n % 3 else ""))], "test-policy")


async def _slow() -> VerifyResult:
    """The reference: every row as stored, one by one, through ChainVerifier.feed."""
    trusted, unanchored = trust()
    head = (await raw("SELECT seq, hash, log_id FROM audit_head WHERE name = 'main'"))[0]
    stored = await raw(f"SELECT {verify._CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq")
    verifier = ChainVerifier(checkpoint_marks(stored, trusted, head["log_id"]), head["log_id"])
    verifier.feed(await raw("SELECT * FROM audit_event ORDER BY id"))
    return verify._anchoring(verifier.finish(head), unanchored)


STITCHED: list[bool] = []


async def _all_paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, VerifyResult]:
    started: list[verify_segment.Worker] = []
    real_stitch = verify_segment.stitch

    class CountedWorker(verify_segment.Worker):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    def recording_stitch(verifier: ChainVerifier, summary: dict[str, Any] | None) -> bool:
        STITCHED.append(real_stitch(verifier, summary))
        return STITCHED[-1]

    STITCHED.clear()
    results = {"default": await verify.verify_database(), "batch 1": await verify.verify_database(batch=1),
               "batch 4": await verify.verify_database(batch=4)}
    with monkeypatch.context() as patch:
        patch.setattr(verify_segment, "PARALLEL_MIN_EVENTS", 2)
        patch.setattr(verify, "Worker", CountedWorker)
        patch.setattr(verify, "stitch", recording_stitch)
        results["worker, batch 3"] = await verify.verify_database(batch=3)
        results["worker"] = await verify.verify_database()
    assert len(started) == 2, "the worker path was not taken"
    return results


def _fields(result: VerifyResult) -> tuple[Any, ...]:
    """The chain's verdict (verify_database adds the pending queue's fields, which are not at issue here)."""
    return tuple(getattr(result, field.name) for field in dataclasses.fields(VerifyResult))


async def _assert_agree(monkeypatch: pytest.MonkeyPatch) -> VerifyResult:
    expected = await _slow()
    for name, result in (await _all_paths(monkeypatch)).items():
        assert _fields(result) == _fields(expected), name
    return expected


async def _id_of(seq: int) -> int:
    return int((await raw("SELECT id FROM audit_event WHERE seq = {}", seq))[0]["id"])


async def _log_id() -> str:
    return str((await raw("SELECT log_id FROM audit_head"))[0]["log_id"])


async def _rechain_from(seq: int, purpose: str) -> None:
    await raw("UPDATE audit_event SET purpose = {} WHERE seq = {}", purpose, seq)
    events = await raw("SELECT * FROM audit_event ORDER BY seq")
    prev, log_id = events[seq - 2]["hash"], await _log_id()
    for event in events[seq - 1:]:
        digest = event_hash(prev, event, log_id)
        await raw('UPDATE audit_event SET prev_hash = {}, "hash" = {} WHERE seq = {}', prev, digest, event["seq"])
        prev = digest
    await raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", prev)


async def _relink_from(seq: int) -> None:
    """Cut the link into `seq` (the worker's first event when split in the middle) and re-chain the rest,
    dropping the checkpoints after it: only the link at the boundary is wrong."""
    await raw("DELETE FROM audit_checkpoint WHERE seq >= {}", seq)
    events = await raw("SELECT * FROM audit_event ORDER BY seq")
    prev, log_id = "a" * 64, await _log_id()
    for event in events[seq - 1:]:
        digest = event_hash(prev, event, log_id)
        await raw('UPDATE audit_event SET prev_hash = {}, "hash" = {} WHERE seq = {}', prev, digest, event["seq"])
        prev = digest
    await raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", prev)


async def _swap(a_seq: int, b_seq: int) -> None:
    a, b = await _id_of(a_seq), await _id_of(b_seq)
    spare = int((await raw("SELECT MAX(id) AS top FROM audit_event"))[0]["top"]) + 1000
    await raw("UPDATE audit_event SET id = {} WHERE id = {}", spare, a)
    await raw("UPDATE audit_event SET id = {} WHERE id = {}", a, b)
    await raw("UPDATE audit_event SET id = {} WHERE id = {}", b, spare)


async def _insert_copy_after(seq: int, copy_of: int) -> None:
    """Make room after `seq` in storage order, then slip in a copy of another event."""
    await raw("UPDATE audit_event SET id = id + 1000 WHERE seq > {}", seq)
    columns = ", ".join(f'"{c}"' for c in (*HASHED_FIELDS[1:], "prev_hash", "hash", "format_version"))
    await raw(f"INSERT INTO audit_event (id, seq, {columns}) SELECT {{}}, {{}}, {columns} FROM audit_event "
              "WHERE seq = {}", await _id_of(seq) + 1, 900, copy_of)


TAMPERINGS: dict[str, Callable[[], Awaitable[Any]]] = {
    "untouched": lambda: raw("SELECT 1"),
    "edit in the first half": lambda: raw("UPDATE audit_event SET purpose = 'x' WHERE seq = 3"),
    "edit in the second half": lambda: raw("UPDATE audit_event SET reason = 'x' WHERE seq = 19"),
    "edit of the last event": lambda: raw("UPDATE audit_event SET outcome = 'x' WHERE seq = {}", TOTAL),
    "edit of a hashed instant": lambda: raw("UPDATE audit_event SET \"at\" = {} WHERE seq = 17",
                                            dt.datetime(2001, 2, 3, tzinfo=dt.UTC)),
    "format downgraded": lambda: raw("UPDATE audit_event SET format_version = 1 WHERE seq = 15"),
    "unknown format": lambda: raw("UPDATE audit_event SET format_version = 9 WHERE seq = 16"),
    "deletion in the first half": lambda: raw("DELETE FROM audit_event WHERE seq = 4"),
    "deletion in the second half": lambda: raw("DELETE FROM audit_event WHERE seq = 18"),
    "deletion of the last event": lambda: raw("DELETE FROM audit_event WHERE seq = {}", TOTAL),
    "deletion of the first event": lambda: raw("DELETE FROM audit_event WHERE seq = 1"),
    "insertion in the second half": lambda: _insert_copy_after(16, 2),
    "reordering at the middle": lambda: _swap(12, 13),
    "reordering in the second half": lambda: _swap(20, 21),
    "re-chained from the second half": lambda: _rechain_from(17, "forged"),
    "link cut at the middle, re-chained after": lambda: _relink_from(TOTAL // 2 + 2),
    "head altered": lambda: raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", "f" * 64),
    "head rewound": lambda: raw("UPDATE audit_head SET seq = seq - 1 WHERE name = 'main'"),
    "checkpoint deleted": lambda: raw("DELETE FROM audit_checkpoint WHERE seq = 15"),
    "checkpoint hash altered": lambda: raw("UPDATE audit_checkpoint SET \"hash\" = {} WHERE seq = 20", "e" * 64),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_every_path_agrees_with_the_slow_reference(db: None, monkeypatch: pytest.MonkeyPatch,
                                                         tampering: str) -> None:
    await _append(TOTAL)
    assert (await _slow()).ok
    await TAMPERINGS[tampering]()
    expected = await _assert_agree(monkeypatch)
    assert expected.ok == (tampering in ("untouched", "checkpoint deleted")), expected.problem
    if expected.ok:
        assert STITCHED == [True, True], "an intact chain is verified by the worker, not re-run"


async def test_a_pruned_chain_agrees_on_every_path(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    await _append(TOTAL)
    await raw("DELETE FROM audit_event WHERE seq <= 10")  # as pruning does, up to the checkpoint at 10
    assert (await _assert_agree(monkeypatch)).ok
    await raw("DELETE FROM audit_checkpoint WHERE seq = 10")  # the anchor gone
    assert not (await _assert_agree(monkeypatch)).ok


TRICKY_INSTANTS = (
    dt.datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=dt.UTC),  # microseconds 0
    dt.datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(2026, 12, 31, 23, 30, 0, 10, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
)
# PostgreSQL: a year of three digits, written unpadded as iso() (strftime's %Y) does. SQLite stores it
# zero-padded in a canonical-length text, which its reader (fast or slow, as before) takes as hashed.
OLD_INSTANT = dt.datetime(999, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC)


async def _write_tricky_chain() -> None:
    """Events written as append_many writes them, with instants and values that are easy to get wrong."""
    log_id, prev, rows = await _log_id(), GENESIS, []
    values = [("", "{}"), ("Straße ✓ 東京", '{"given_name": "allow by Prüfung"}'), ("\u00e9\u0301", '{"": ""}'),
              ("x" * 500, '{"a": "b"}')]
    instants = TRICKY_INSTANTS if is_sqlite() else (*TRICKY_INSTANTS, OLD_INSTANT)
    for seq, (at, (reason, fields)) in enumerate(zip(instants, values), start=1):
        row = {"seq": seq, "at": at, "request_id": "", "face": "", "actor_kind": "system", "actor_id": "",
               "role": "", "action": "read", "entity": "crm_person", "subjects": "[]", "fields": fields,
               "purpose": "customer_service", "reason": reason, "policy_version": "", "outcome": "ok"}
        digest = link(EVENT_FORMAT, prev, row_text(row), log_id)
        rows.append((*[row[c] for c in HASHED_FIELDS], prev, digest, EVENT_FORMAT))
        prev = digest
    async with write_transaction():
        await insert_many("audit_event", [*HASHED_FIELDS, "prev_hash", "hash", "format_version"], rows)
        await raw("UPDATE audit_head SET seq = {}, \"hash\" = {} WHERE name = 'main'", len(rows), prev)


async def test_text_joined_by_the_database_is_row_text_for_tricky_values(db: None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    await _write_tricky_chain()
    joined = SQLITE_TEXT if is_sqlite() else PG_TEXT
    rows = await raw(f"SELECT *, {joined} AS joined FROM audit_event ORDER BY id")
    assert len(rows) == len(TRICKY_INSTANTS) + (0 if is_sqlite() else 1)
    for row in rows:
        if is_sqlite() and row["seq"] == 1:
            # SQLite keeps str(datetime), without microseconds when they are 0: the fast path does not
            # match that row, and the slow path re-checks it from the stored text.
            assert row["joined"] != row_text(row).encode()
        else:
            assert row["joined"] == row_text(row).encode(), row["seq"]
    result = await _assert_agree(monkeypatch)
    assert result.ok and result.checked == len(rows), result.problem
