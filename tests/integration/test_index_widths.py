"""Changing MUTUAL_EXPECTED_PEOPLE after people exist: search still finds them, `mutual index rebuild` re-plans."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import gateway
from server.db import raw
from server.gateway import indexing
from server.kernel import get_kernel
from server.settings import get_settings
from server.vault.blind import _hmac, index_bits, stored_width
from tests.support import ERIKA, MAX, staff

REPO = Path(__file__).resolve().parents[2]
ADMIN = staff("admin")


@pytest.fixture
def expected_people(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MUTUAL_EXPECTED_PEOPLE", "100000")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _expect(monkeypatch: pytest.MonkeyPatch, people: int) -> None:
    monkeypatch.setenv("MUTUAL_EXPECTED_PEOPLE", str(people))
    get_settings.cache_clear()


async def _found(field: str, query: str) -> set:
    return {r.id for r in await gateway.find_people(ADMIN, purpose="customer_service", field=field, query=query)}


async def _widths() -> set[int | None]:
    values = [r["v"] for r in await raw("SELECT email_index AS v FROM crm_person WHERE email_index IS NOT NULL")]
    values += [r["v"] for r in await raw("SELECT phone_index AS v FROM crm_person WHERE phone_index IS NOT NULL")]
    values += [r["v"] for r in await raw("SELECT token_index AS v FROM crm_person_token")]
    return {stored_width(v) for v in values}


async def test_a_person_indexed_before_expected_people_changed_is_still_found_and_a_rebuild_replans_them(
        db: None, expected_people: None, monkeypatch: pytest.MonkeyPatch) -> None:
    erika = await gateway.create_person(ADMIN, purpose="customer_service", values=ERIKA)
    max_ = await gateway.create_person(ADMIN, purpose="customer_service", values=MAX)
    before = {f: indexing.bits(f) for f in indexing.SEARCH_FIELDS}
    _expect(monkeypatch, 1_000)  # the operator lowers the estimate: every planned width changes
    after = {f: indexing.bits(f) for f in indexing.SEARCH_FIELDS}
    assert all(before[f] != after[f] for f in indexing.SEARCH_FIELDS)
    # the stored values keep their old width, and search asks for every width: nobody goes missing
    assert await _found("email", ERIKA["email"]) == {erika}
    assert await _found("phone", "089 7654321") == {max_}
    assert await _found("name", "mustermann") == {erika, max_}
    assert (await indexing.stale_widths())["email"] == 2
    env = dict(os.environ, MUTUAL_EXPECTED_PEOPLE="1000")
    status = subprocess.run([sys.executable, "-m", "server.cli", "index", "status"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "run `mutual index rebuild`" in status.stdout

    result = subprocess.run([sys.executable, "-m", "server.cli", "index", "rebuild", "--batch", "1"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"email index at {after['email']} bits; re-indexed 2 people" in result.stdout
    assert "index name" in result.stderr  # the progress bar
    assert await _widths() == set(after.values())
    assert await indexing.stale_widths() == {"email": 0, "phone": 0, "name": 0}
    assert await _found("email", ERIKA["email"]) == {erika}
    assert await _found("phone", "089 7654321") == {max_}
    assert await _found("name", "erika mustermann") == {erika}
    events = await raw("SELECT entity FROM audit_event WHERE action = 'rebuild_index'")
    assert [e["entity"] for e in events] == ["index:email,phone,name"]


async def test_a_value_written_before_widths_were_stored_is_still_found(db: None, expected_people: None) -> None:
    erika = await gateway.create_person(ADMIN, purpose="customer_service", values=ERIKA)
    key_id, key = get_kernel().keys.purpose_key("email", "blind-index")
    old_bits = index_bits(100_000)  # the old per-index rule: 14 bits, stored as key:hex
    value = int.from_bytes(_hmac(key, indexing.normalised("email", ERIKA["email"]))[:4], "big") >> (32 - old_bits)
    await raw("UPDATE crm_person SET email_index = {} WHERE id = {}", f"{key_id}:{value:0{(old_bits + 3) // 4}x}",
              erika)
    assert await _found("email", ERIKA["email"]) == {erika}
    assert (await indexing.stale_widths())["email"] == 1


async def test_a_person_in_a_bucket_shared_by_hundreds_is_still_found(
        db: None, expected_people: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _expect(monkeypatch, 1_000)
    monkeypatch.setattr(indexing, "bits", lambda field: 0)  # one bucket: everyone shares every index value
    others = [{"family_name": f"Beispiel{i}", "email": f"b{i}@example.com"} for i in range(230)]
    await gateway.import_people(ADMIN, purpose="customer_service", rows=others)
    erika = await gateway.create_person(ADMIN, purpose="customer_service", values=ERIKA)
    assert await _found("email", ERIKA["email"]) == {erika}  # a fixed LIMIT 200 left her out
    assert await _found("name", "erika") == {erika}
