"""Signed checkpoints catch a rewritten chain, exported files verify offline, and pruning keeps the chain verifiable."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.actor import system_actor
from server.audit import checkpoints, signing
from server.audit.chain import Entry, append_many, event_hash, verify_database
from server.audit.checkpoints import (
    checkpoint_now,
    checkpoints_covering,
    prune,
    sign_checkpoint,
    verify_checkpoint,
)
from server.db import raw

EVERY = 4
REPO = Path(__file__).resolve().parents[2]


def _mutual(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "MUTUAL_AUDIT_CHECKPOINT_EVERY": str(EVERY)})


@pytest.fixture(autouse=True)
def small_checkpoint_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY", EVERY)


async def _append(count: int, batch: int = 1) -> None:
    actor = system_actor("test")
    for start in range(0, count, batch):
        entries = [(actor, Entry(action="read", entity="crm_person", purpose="customer_service"))
                   for _ in range(min(batch, count - start))]
        await append_many(entries, "test-policy")


async def _events() -> list[dict[str, Any]]:
    return await raw("SELECT * FROM audit_event ORDER BY seq")


async def _log_id() -> str:
    return str((await raw("SELECT log_id FROM audit_head"))[0]["log_id"])


async def _checkpoint_seqs() -> list[int]:
    return [int(r["seq"]) for r in await raw("SELECT seq FROM audit_checkpoint ORDER BY seq")]


async def _rechain_from(seq: int, purpose: str) -> None:
    """What an attacker with database access could do: change an event, recompute every later hash
    and the head, so the hash chain alone is consistent again."""
    await raw("UPDATE audit_event SET purpose = {} WHERE seq = {}", purpose, seq)
    events = await _events()
    prev = events[seq - 2]["hash"] if seq > 1 else "0" * 64
    log_id = await _log_id()
    for event in events[seq - 1:]:
        digest = event_hash(prev, event, log_id)
        await raw('UPDATE audit_event SET prev_hash = {}, "hash" = {} WHERE seq = {}', prev, digest, event["seq"])
        prev = digest
    await raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", prev)


async def test_a_checkpoint_is_signed_each_time_the_chain_passes_a_multiple_of_the_interval(db: None) -> None:
    await _append(9)
    await _append(6, batch=3)  # events 10-12 pass 12, 13-15 pass nothing
    assert await _checkpoint_seqs() == [4, 8, 12]
    result = await verify_database()
    assert result.ok, result.problem
    assert (result.checked, result.checkpoints) == (15, 3)


async def test_a_batch_passing_a_multiple_is_checkpointed_at_its_last_event(db: None) -> None:
    await _append(6, batch=6)
    assert await _checkpoint_seqs() == [6]
    event = (await raw('SELECT "hash" FROM audit_event WHERE seq = 6'))[0]
    assert (await checkpoints_covering(1, 6))[0]["hash"] == event["hash"]


async def test_stored_checkpoints_verify_and_are_listed_with_the_first_one_after_the_range(db: None) -> None:
    await _append(13)
    covering = await checkpoints_covering(5, 9)
    assert [c["seq"] for c in covering] == [8, 12]
    assert all(verify_checkpoint(c) for c in covering)
    assert all(len(c["at"]) == 32 for c in covering)
    assert not verify_checkpoint({**covering[0], "hash": "e" * 64})


async def test_a_forged_checkpoint_signature_is_named_by_its_seq(db: None) -> None:
    await _append(9)
    forged = base64.b64encode(b"\x01" * 64).decode()
    await raw("UPDATE audit_checkpoint SET signature = {} WHERE seq = {}", forged, 8)
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == 8
    assert result.problem == "checkpoint at event 8: signature invalid"


async def test_a_checkpoint_re_signed_with_another_key_is_not_trusted(db: None) -> None:
    await _append(5)
    event = (await raw('SELECT "hash" FROM audit_event WHERE seq = 4'))[0]
    stored = (await checkpoints_covering(4, 4))[0]
    other = sign_checkpoint(Ed25519PrivateKey.generate(), 4, event["hash"], stored["at"], await _log_id())
    await raw("UPDATE audit_checkpoint SET key_id = {}, public_key = {}, signature = {} WHERE seq = 4",
              other["key_id"], other["public_key"], other["signature"])
    assert stored["format_version"] == other["format_version"] == 2
    assert verify_checkpoint(other)  # a valid signature, but by a key this installation does not hold
    result = await verify_database()
    assert not result.ok and result.first_bad_seq == 4
    assert "not a trusted audit signing key" in result.problem


async def test_a_changed_event_re_chained_to_the_end_is_caught_by_the_checkpoint_after_it(db: None) -> None:
    await _append(10)
    await _rechain_from(3, "marketing")
    result = await verify_database()
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.problem.startswith("checkpoint at event 4 does not match the chain: event 4 was changed")
    assert result.checked == 3


async def test_events_removed_from_the_end_with_the_head_reset_are_caught_by_a_later_checkpoint(db: None) -> None:
    await _append(9)
    last_kept = (await raw('SELECT "hash" FROM audit_event WHERE seq = 7'))[0]["hash"]
    await raw("DELETE FROM audit_event WHERE seq > 7")
    await raw("UPDATE audit_head SET seq = 7, \"hash\" = {} WHERE name = 'main'", last_kept)
    result = await verify_database()
    assert not result.ok and result.first_bad_seq == 8
    assert "chain ends before it" in result.problem


async def test_checkpoint_now_signs_the_head_once(db: None) -> None:
    assert await checkpoint_now() is None  # an empty chain has nothing to sign
    await _append(2)
    first = await checkpoint_now()
    assert first is not None and first["seq"] == 2 and verify_checkpoint(first)
    assert await checkpoint_now() == first
    assert await _checkpoint_seqs() == [2]


async def test_appends_go_on_without_checkpoints_when_the_signing_key_is_missing(
    db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(signing, "signing_key_path", lambda: tmp_path / "missing.key")
    monkeypatch.setattr(signing, "_warned_missing_key", False)
    with caplog.at_level(logging.WARNING, logger="mutual.audit"):
        await _append(9)
    assert await _checkpoint_seqs() == []
    assert len([r for r in caplog.records if "signing key" in r.getMessage()]) == 1
    result = await verify_database()
    assert result.ok and result.checked == 9


async def test_an_unreadable_signing_key_skips_checkpoints_but_not_appends(
    db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = tmp_path / "broken.key"
    broken.write_text("not a key")
    monkeypatch.setattr(signing, "signing_key_path", lambda: broken)
    monkeypatch.setattr(signing, "_warned_missing_key", False)
    await _append(5)
    assert await _checkpoint_seqs() == []
    assert len(await _events()) == 5
    with pytest.raises(RuntimeError, match="no audit signing key"):
        await checkpoint_now()


def test_a_new_signing_key_file_is_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit-signing.key"
    assert checkpoints.write_signing_key(path)
    content = path.read_bytes()
    assert content.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert path.stat().st_mode & 0o777 == 0o600
    assert not checkpoints.write_signing_key(path)
    assert path.read_bytes() == content
    assert list(path.parent.iterdir()) == [path]


# --- retention ------------------------------------------------------------------------------------

async def _age_events(up_to: int, days: int) -> None:
    """Move events 1..up_to into the past and re-hash the chain, as if written `days` ago."""
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    await raw('UPDATE audit_event SET "at" = {} WHERE seq <= {}', old, up_to)
    await raw("DELETE FROM audit_checkpoint")
    events = await _events()
    prev, log_id = "0" * 64, await _log_id()
    for event in events:
        digest = event_hash(prev, event, log_id)
        await raw('UPDATE audit_event SET prev_hash = {}, "hash" = {} WHERE seq = {}', prev, digest, event["seq"])
        prev = digest
    await raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", prev)


async def test_pruning_removes_old_events_and_the_chain_verifies_from_the_anchor(db: None) -> None:
    await _append(10)
    await _age_events(6, days=400)
    await raw("INSERT INTO audit_subject (pseudonym, seq) VALUES ({}, {})",
              "6f1c2a52-5c1e-4b9d-8d7e-0a2b3c4d5e6f", 3)
    result = await prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=365))
    assert (result.events, result.subjects, result.anchor_seq) == (6, 1, 6)
    assert [e["seq"] for e in await _events()] == [7, 8, 9, 10]
    assert await raw("SELECT seq FROM audit_subject") == []
    assert 6 in await _checkpoint_seqs()
    verified = await verify_database()
    assert verified.ok, verified.problem
    assert verified.checked == 4
    await _append(3)  # the chain goes on after pruning
    assert (await verify_database()).ok


async def test_pruning_with_nothing_old_enough_deletes_nothing(db: None) -> None:
    await _append(5)
    result = await prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    assert (result.events, result.anchor_seq) == (0, None)
    assert len(await _events()) == 5


async def test_pruning_everything_leaves_a_chain_anchored_at_its_head(db: None) -> None:
    await _append(3)
    result = await prune(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert (result.events, result.anchor_seq) == (3, 3)
    assert await _events() == []
    assert (await verify_database()).ok
    await _append(1)
    assert (await verify_database()).ok


async def test_deleting_the_anchor_checkpoint_after_pruning_fails_verification(db: None) -> None:
    await _append(10)
    await _age_events(5, days=400)
    await prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=365))
    await raw("DELETE FROM audit_checkpoint WHERE seq = {}", 5)
    result = await verify_database()
    assert not result.ok and result.first_bad_seq == 6
    assert "no validly signed checkpoint at event 5 anchors it" in result.problem


async def test_a_forged_anchor_signature_after_pruning_fails_verification(db: None) -> None:
    await _append(10)
    await _age_events(5, days=400)
    await prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=365))
    await raw("UPDATE audit_checkpoint SET signature = {} WHERE seq = 5", base64.b64encode(b"\x03" * 64).decode())
    result = await verify_database()
    assert not result.ok and result.first_bad_seq == 6


async def test_pruning_refuses_a_chain_that_does_not_verify(db: None) -> None:
    await _append(5)
    await _age_events(5, days=400)
    await raw("UPDATE audit_event SET purpose = 'x' WHERE seq = 2")
    with pytest.raises(RuntimeError, match="does not verify"):
        await prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=365))
    assert len(await _events()) == 5


async def test_the_cli_signs_the_head_and_prunes_before_a_date(db: None) -> None:
    await _append(6)
    signed = _mutual("audit", "checkpoint")
    assert signed.returncode == 0, signed.stderr
    assert "audit checkpoint at event 6 signed by key" in signed.stdout
    await _age_events(3, days=30)
    before = (dt.datetime.now(dt.UTC) - dt.timedelta(days=10)).date().isoformat()
    pruned = _mutual("audit", "prune", "--before", before)
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned 3 audit events" in pruned.stdout and "checkpoint at event 3" in pruned.stdout
    # the pruning itself is an admin action: recorded as the next event
    assert [(e["seq"], e["action"]) for e in await _events()][-1] == (7, "audit_prune")
    assert [e["seq"] for e in await _events()] == [4, 5, 6, 7]
    again = _mutual("audit", "prune")  # default: the six-year retention period
    assert again.returncode == 0 and "nothing pruned" in again.stdout
    intact = _mutual("audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "5 events verified" in intact.stdout  # 4-7 and the second prune's own event
