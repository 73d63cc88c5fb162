"""An event that cannot be made durable fails the call that records it, and nothing of it is written."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import Any

import pytest

from server import gateway
from server.audit import flush, record
from server.audit.chain import verify_database
from server.db import is_sqlite, raw, write_transaction
from tests.audit_support import REFUSAL, Refuse, background, chained, pending_count, read_entry, reader, refuse
from tests.support import ERIKA, staff

__all__ = ["background", "refuse"]  # fixtures


async def _head() -> tuple[int, str]:
    rows = await raw("SELECT seq, hash FROM audit_head WHERE name = 'main'")
    return int(rows[0]["seq"]), rows[0]["hash"]


async def _refuse_everywhere(refuse: Refuse) -> None:
    await refuse("audit_event")
    await refuse("audit_pending")


async def test_a_read_record_that_cannot_be_written_raises_and_writes_nothing(
    db: None, background: None, refuse: Refuse,
) -> None:
    await _refuse_everywhere(refuse)
    head = await _head()
    with pytest.raises(Exception, match=REFUSAL):
        await record([(reader(1), read_entry()), (reader(1), read_entry())], "v1")
    assert await chained() == []
    assert await pending_count() == 0
    assert await _head() == head


async def test_a_write_whose_record_fails_is_rolled_back_with_it(
    db: None, background: None, refuse: Refuse,
) -> None:
    await _refuse_everywhere(refuse)
    with pytest.raises(Exception, match=REFUSAL):
        async with write_transaction():
            await raw("INSERT INTO crm_organisation (id, name, created_at) VALUES ({}, {}, {})",
                      uuid.uuid4(), "Musterfirma GmbH", dt.datetime.now(dt.UTC))
            await record([(reader(1), read_entry("update"))], "v1")
    assert await raw("SELECT id FROM crm_organisation") == []
    assert await chained() == [] and await pending_count() == 0


async def test_a_gateway_read_whose_event_is_refused_returns_no_data(db: None, refuse: Refuse) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose="customer_service", values=ERIKA)
    before = await chained()
    await _refuse_everywhere(refuse)
    result: Any = None
    with pytest.raises(Exception, match=REFUSAL):
        result = await gateway.get_person(admin, purpose="customer_service", person_id=erika)
    assert result is None
    with pytest.raises(Exception, match=REFUSAL):
        result = await gateway.list_people(admin, purpose="customer_service")
    assert result is None
    assert await chained() == before


async def test_the_chain_still_verifies_after_refused_records_and_takes_the_next_one(
    db: None, background: None, refuse: Refuse,
) -> None:
    await record([(reader("before"), read_entry())], "v1")
    await refuse("audit_event" if is_sqlite() else "audit_pending", action="poison")
    for _ in range(3):
        with contextlib.suppress(Exception):
            await record([(reader("refused"), read_entry("poison"))], "v1")
    await record([(reader("after"), read_entry())], "v1")
    await flush()
    assert [(int(e["seq"]), e["actor_id"]) for e in await chained()] == [(1, "reader-before"), (2, "reader-after")]
    assert (await verify_database()).ok
