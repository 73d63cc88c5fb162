"""The live chain is anchored: heads signed on a timer and published to a witness outside the database, the
trusted key pinned in configuration, and events and checkpoints bound to a format version and this log."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.actor import system_actor
from server.audit import anchor, checkpoints, signing
from server.audit.chain import Entry, append_many, ensure_head, event_hash, verify_database
from server.audit.format import link, row_text
from server.audit.signing import load_signing_key, public_raw, sign_checkpoint, write_signing_key
from server.audit.witness import FileWitness
from server.cli import main
from server.db import raw
from server.settings import get_settings

EVERY = 4
REPO = Path(__file__).resolve().parents[2]


def _mutual(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "MUTUAL_AUDIT_CHECKPOINT_EVERY": str(EVERY)})


@pytest.fixture(autouse=True)
def small_checkpoint_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY", EVERY)
    monkeypatch.setattr(anchor, "_published", {})


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set MUTUAL_ settings for this test (None removes one)."""
    def apply(**values: str | None) -> None:
        for name, value in values.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def witness(tmp_path: Path, configure: Any) -> Path:
    path = tmp_path / "witness" / "audit-heads.jsonl"
    configure(MUTUAL_AUDIT_WITNESS=f"file://{path}")
    return path


async def _append(count: int, batch: int | None = None) -> None:
    actor = system_actor("test")
    for start in range(0, count, batch or count):
        await append_many([(actor, Entry("read", "crm_person", "customer_service"))
                           for _ in range(min(batch or count, count - start))], "v")


async def _events() -> list[dict[str, Any]]:
    return [dict(row) for row in await raw("SELECT * FROM audit_event ORDER BY seq")]


async def _log_id() -> str:
    return str((await raw("SELECT log_id FROM audit_head"))[0]["log_id"])


async def _cut_tail(keep: int) -> None:
    """What an attacker with database access does: delete the last events and their checkpoints, and
    rewind the head to the last event kept, so the chain in the database is consistent again."""
    kept = (await raw('SELECT "hash" FROM audit_event WHERE seq = {}', keep))[0]["hash"]
    await raw("DELETE FROM audit_event WHERE seq > {}", keep)
    await raw("DELETE FROM audit_checkpoint WHERE seq > {}", keep)
    await raw("UPDATE audit_head SET seq = {}, \"hash\" = {} WHERE name = 'main'", keep, kept)


async def test_a_cut_tail_with_a_rewound_head_is_detected_against_the_witness(
        db: None, witness: Path, configure: Any) -> None:
    await _append(9, batch=1)  # checkpoints at 4 and 8
    published = await anchor.tick()  # the timer signs the head at 9 and hands it to the witness
    assert published is not None and published["seq"] == 9
    entries = [json.loads(line) for line in witness.read_text().splitlines()]
    assert [(e["kind"], e["seq"], e["hash"]) for e in entries] == [("head", 9, published["hash"])]
    await _cut_tail(keep=6)
    configure(MUTUAL_AUDIT_WITNESS=None)
    alone = await verify_database()
    assert alone.verdict == "INTACT", alone.problem  # the attack the database alone cannot see
    configure(MUTUAL_AUDIT_WITNESS=f"file://{witness}")
    result = await verify_database()
    assert result.verdict == "BROKEN" and result.first_bad_seq == 7
    assert "the head witnessed at event 9" in result.problem and "beyond the chain's end at event 6" in result.problem
    cli = _mutual("audit", "verify")
    assert cli.returncode == 1 and "witnessed at event 9" in cli.stderr


async def test_a_chain_rewritten_after_its_head_was_witnessed_fails_naming_the_witnessed_seq(
        db: None, witness: Path) -> None:
    await _append(6)
    await anchor.tick()
    await _append(1)  # the chain goes on past the witnessed head: that is fine
    assert (await verify_database()).verdict == "INTACT"
    events = await _events()
    prev, log_id = events[1]["hash"], await _log_id()
    for event in events[2:]:  # event 3 rewritten and everything after it re-chained, checkpoints dropped
        if event["seq"] == 3:
            event["purpose"] = "marketing"
        digest = event_hash(prev, event, log_id)
        await raw('UPDATE audit_event SET purpose = {}, prev_hash = {}, "hash" = {} WHERE seq = {}',
                  event["purpose"], prev, digest, event["seq"])
        prev = digest
    await raw("DELETE FROM audit_checkpoint")
    await raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", prev)
    result = await verify_database()
    assert result.verdict == "BROKEN" and result.first_bad_seq == 6
    assert "the head witnessed at event 6" in result.problem and "diverges" in result.problem


async def test_the_timer_signs_the_head_after_writes_without_reaching_n(db: None, witness: Path) -> None:
    await _append(2)  # fewer than N = 4: no count-based checkpoint
    assert await raw("SELECT seq FROM audit_checkpoint") == []
    timer = asyncio.create_task(anchor.run(0.05))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await raw("SELECT seq FROM audit_checkpoint"):
                break
    finally:
        timer.cancel()
    assert [r["seq"] for r in await raw("SELECT seq FROM audit_checkpoint")] == [2]
    assert json.loads(witness.read_text().splitlines()[-1])["seq"] == 2
    await anchor.tick()  # nothing new: no second checkpoint and no second witness line
    assert len(await raw("SELECT seq FROM audit_checkpoint")) == 1 and len(witness.read_text().splitlines()) == 1


async def test_the_face_apps_start_and_stop_the_head_signing_timer(db: None, configure: Any) -> None:
    from litestar.testing import AsyncTestClient

    from backoffice.app import create_app

    configure(MUTUAL_AUDIT_SIGN_SECONDS="3600")
    async with AsyncTestClient(app=create_app()):
        assert anchor._task.running
    assert not anchor._task.running


async def test_against_the_pinned_key_a_checkpoint_signed_by_a_replaced_key_file_fails(
        db: None, tmp_path: Path, configure: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    await _append(5)
    forged_key = tmp_path / "attacker.key"
    write_signing_key(forged_key)
    monkeypatch.setattr(signing, "signing_key_path", lambda: forged_key)  # the key file swapped with the database
    await raw("DELETE FROM audit_checkpoint")
    await checkpoints.checkpoint_now()
    result = await verify_database()
    assert result.verdict == "BROKEN" and result.first_bad_seq == 5
    assert "not a trusted audit signing key" in result.problem
    configure(MUTUAL_AUDIT_PUBLIC_KEY=None)
    unpinned = await verify_database()  # the key file is all an unpinned installation can check against
    assert unpinned.ok and unpinned.verdict == "UNANCHORED" and "MUTUAL_AUDIT_PUBLIC_KEY" in unpinned.unanchored
    configure(MUTUAL_AUDIT_SIGNING_KEY=str(forged_key))  # the CLI, too, reads the swapped key file
    cli = _mutual("audit", "verify")
    assert cli.returncode == 3 and "UNANCHORED" in cli.stdout and "intact" not in cli.stdout


async def test_a_witnessed_head_signed_by_another_key_fails_verification(db: None, witness: Path) -> None:
    await _append(3)
    events = await _events()
    FileWitness(witness).publish(sign_checkpoint(Ed25519PrivateKey.generate(), 3, events[-1]["hash"],
                                                 events[-1]["at"], await _log_id()))
    result = await verify_database()
    assert not result.ok and "witness" in result.problem and "not a trusted audit signing key" in result.problem


def test_the_public_key_command_prints_the_value_to_pin(capsys: pytest.CaptureFixture[str]) -> None:
    key = load_signing_key()
    assert key is not None and main(["audit", "public-key"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == base64.b64encode(public_raw(key)).decode()
    assert signing.pin(printed) in (signing.pinned_keys() or set())


# --- format versions and the log identity ----------------------------------------------------------------

async def _to_format_1() -> dict[str, Any]:
    """Re-write the stored chain as the code before format 2 wrote it: old hashes, an old checkpoint, a head
    without a log id. Returns that checkpoint."""
    prev = "0" * 64
    for event in await _events():
        event["format_version"] = 1
        digest = link(1, prev, row_text(event), "")
        await raw('UPDATE audit_event SET prev_hash = {}, "hash" = {}, format_version = 1 WHERE seq = {}',
                  prev, digest, event["seq"])
        prev = digest
    last = (await _events())[-1]
    key = load_signing_key()
    assert key is not None
    old = sign_checkpoint(key, last["seq"], last["hash"], last["at"])  # no log id: the format-1 message
    await raw("DELETE FROM audit_checkpoint")
    await raw("INSERT INTO audit_checkpoint (seq, hash, at, key_id, public_key, signature, format_version, log_id) "
              "VALUES ({}, {}, {}, {}, {}, {}, 1, '')", old["seq"], old["hash"], last["at"], old["key_id"],
              old["public_key"], old["signature"])
    await raw("UPDATE audit_head SET \"hash\" = {}, log_id = '' WHERE name = 'main'", prev)
    return old


async def test_a_chain_written_in_the_old_format_still_verifies_and_goes_on_in_format_2(db: None) -> None:
    await _append(3)
    old = await _to_format_1()
    assert old["format_version"] == 1
    await ensure_head()  # `mutual migrate` gives the old head its log id
    log_id = await _log_id()
    assert len(log_id) == 36
    await _append(3)  # 4-6 in format 2, the checkpoint at 4 signed for this log
    events = await _events()
    assert [e["format_version"] for e in events] == [1, 1, 1, 2, 2, 2]
    assert events[3]["hash"] == event_hash(events[2]["hash"], events[3], log_id)
    stored = await raw("SELECT seq, format_version, log_id FROM audit_checkpoint ORDER BY seq")
    assert [(r["seq"], r["format_version"], r["log_id"]) for r in stored] == [(3, 1, ""), (6, 2, log_id)]
    result = await verify_database()
    assert result.verdict == "INTACT", result.problem
    assert (result.checked, result.checkpoints) == (6, 2)
    await raw("UPDATE audit_event SET purpose = 'marketing' WHERE seq = 2")
    broken = await verify_database()
    assert broken.first_bad_seq == 2 and "modified" in broken.problem


async def test_events_hashed_for_another_log_do_not_verify(db: None) -> None:
    await _append(3)
    own = await _log_id()
    await raw("UPDATE audit_head SET log_id = '00000000-0000-4000-8000-000000000000'")
    try:
        result = await verify_database()
    finally:
        await raw("UPDATE audit_head SET log_id = {}", own)
    assert result.verdict == "BROKEN" and result.first_bad_seq == 1 and "does not match its hash" in result.problem


async def test_a_checkpoint_signed_for_another_log_fails(db: None) -> None:
    await _append(3)
    last = (await _events())[-1]
    key = load_signing_key()
    assert key is not None
    other = sign_checkpoint(key, 3, last["hash"], last["at"], "00000000-0000-4000-8000-000000000000")
    await raw("INSERT INTO audit_checkpoint (seq, hash, at, key_id, public_key, signature, format_version, log_id) "
              "VALUES ({}, {}, {}, {}, {}, {}, 2, {})", 3, other["hash"], last["at"], other["key_id"],
              other["public_key"], other["signature"], other["log_id"])
    result = await verify_database()
    assert result.verdict == "BROKEN" and result.first_bad_seq == 3
    assert "signed for another log" in result.problem


async def test_a_new_event_re_hashed_in_the_old_format_is_a_downgrade_and_fails(db: None) -> None:
    await _append(5)
    events = await _events()
    prev = events[2]["hash"]
    for event in events[3:]:  # event 4 turned into a format-1 event, the rest re-chained
        version = 1 if event["seq"] == 4 else 2
        event["format_version"] = version
        digest = link(version, prev, row_text(event), await _log_id())
        await raw('UPDATE audit_event SET prev_hash = {}, "hash" = {}, format_version = {} WHERE seq = {}',
                  prev, digest, version, event["seq"])
        prev = digest
    await raw("DELETE FROM audit_checkpoint")
    await raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", prev)
    result = await verify_database()
    assert result.verdict == "BROKEN" and result.first_bad_seq == 4
    assert "format 1 after events of format 2" in result.problem



def test_a_pinned_key_that_is_not_a_key_is_refused_with_the_fix(configure: Any) -> None:
    configure(MUTUAL_AUDIT_PUBLIC_KEY="not-a-key")
    with pytest.raises(ValueError, match="mutual audit public-key"):
        signing.pinned_keys()
    configure(MUTUAL_AUDIT_PUBLIC_KEY=None, MUTUAL_AUDIT_WITNESS="ftp://example.org/heads")
    with pytest.raises(ValueError, match="unknown kind 'ftp'; known: file"):
        anchor.start()


@pytest.fixture
def witness_service(configure: Any) -> Iterator[list[dict[str, Any]]]:
    """A witness service on loopback: keeps every POSTed head, answers GET with the newest."""
    import http.server
    import threading

    kept: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook
            kept.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(201)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(kept[-1]).encode() if kept else b""
            self.send_response(200 if kept else 204)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configure(MUTUAL_AUDIT_WITNESS=f"http://127.0.0.1:{server.server_port}/heads")
    yield kept
    server.shutdown()
    server.server_close()


async def test_a_cut_tail_is_detected_against_a_witness_service_as_well(
        db: None, witness_service: list[dict[str, Any]]) -> None:
    await _append(5, batch=1)
    await anchor.tick()
    assert [e["seq"] for e in witness_service] == [5]
    await _cut_tail(keep=4)
    result = await verify_database()
    assert result.verdict == "BROKEN" and "the head witnessed at event 5 (url http://127.0.0.1:" in result.problem
