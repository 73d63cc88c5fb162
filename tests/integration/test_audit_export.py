"""The audit export streams a large chain in bounded keyset batches, each event checkable against its hash."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from server.audit import service
from server.audit.chain import GENESIS, Entry, append_many, event_hash
from server.errors import PolicyDenied
from server.kernel import get_kernel
from tests.support import staff

EVENTS = 20_000
BATCH = 1_000


async def _generate(count: int) -> None:
    reader, subject = staff("support"), str(uuid.uuid4())
    for start in range(0, count, 5_000):
        await append_many([(reader, Entry("read", "crm_person", "customer_service", subjects=(subject,),
                                          fields={"email": "allow"}))
                           for _ in range(min(5_000, count - start))], get_kernel().policies.version)


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch the export reads, with the batch size lowered to 1,000 rows."""
    sizes: list[int] = []
    fetch = service._fetch_batch

    async def counted(*args: Any) -> list[dict[str, Any]]:
        rows = await fetch(*args)
        sizes.append(len(rows))
        return rows

    monkeypatch.setattr(service, "EXPORT_BATCH", BATCH)
    monkeypatch.setattr(service, "_fetch_batch", counted)
    return sizes


async def test_an_export_of_20000_events_is_read_in_bounded_batches_and_every_hash_checks_out(
        db: None, fetches: list[int]) -> None:
    await _generate(EVENTS)
    export = await service.export_events(staff("compliance"), "jsonl")
    chunks = [chunk async for chunk in export.chunks]
    lines = [json.loads(line) for chunk in chunks for line in chunk.splitlines()]
    header, events, end = lines[0], lines[1:-1], lines[-1]
    assert len(fetches) >= EVENTS // BATCH and max(fetches) <= BATCH
    assert len(chunks) == len([size for size in fetches if size]) + 2  # header, one per batch, the end
    assert header["kind"] == "header" and header["filters"] == {}
    assert len(events) == EVENTS + 1  # and the export's own event, recorded before streaming
    assert events[-1]["action"] == "export"
    assert [e["seq"] for e in events] == list(range(1, EVENTS + 2))
    prev = GENESIS
    for event in events:
        assert event["kind"] == "event" and event["prev_hash"] == prev
        assert event["hash"] == event_hash(event["prev_hash"], event, header["log_id"]), f"event {event['seq']}"
        prev = event["hash"]
    assert end["kind"] == "end" and isinstance(end["checkpoints"], list)
    assert (end["head"]["seq"], end["head"]["hash"]) == (EVENTS + 1, prev)


async def test_a_filtered_csv_export_reads_only_matching_events_in_batches(db: None, fetches: list[int]) -> None:
    await _generate(2_500)
    export = await service.export_events(staff("compliance"), "csv",
                                         filters=service.AuditFilters(action="export"))
    text = "".join([chunk async for chunk in export.chunks])
    assert text.splitlines()[0] == ",".join(service.EVENT_COLUMNS)
    assert len(text.splitlines()) == 2  # the header and the export's own event
    assert fetches == [1]


async def test_staff_without_the_compliance_role_cannot_export(db: None) -> None:
    with pytest.raises(PolicyDenied):
        await service.export_events(staff("support"), "jsonl")


async def test_the_jsonl_export_verifies_offline_with_the_checkpoint_verifier(db: None, tmp_path: Any) -> None:
    checkpoints = pytest.importorskip("server.audit.checkpoints")
    await _generate(2_500)
    export = await service.export_events(staff("compliance"), "jsonl")
    path = tmp_path / export.filename
    path.write_text("".join([chunk async for chunk in export.chunks]))
    result = checkpoints.verify_export(path)
    assert result.ok, result.problem
    assert result.checked == 2_501
