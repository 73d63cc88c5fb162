"""An exported audit file accounts for every seq up to a head signed at export: deletions, a cut tail and
re-signed rewrites fail; a filtered export proves what it left out; without a pinned key it is UNANCHORED."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.actor import system_actor
from server.audit import service
from server.audit.chain import Entry, append_many, event_hash
from server.audit.export_verify import verify_export
from server.audit.format import content_digest, link, row_text
from server.audit.signing import load_signing_key, pin, pinned_keys, public_raw, sign_checkpoint
from server.cli import main
from server.db import raw
from server.kernel import get_kernel
from server.settings import get_settings
from tests.support import staff

ERIKA_PSEUDONYM, MAX_PSEUDONYM = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture
def unpinned(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installation (or an auditor's machine) where no public key is pinned."""
    monkeypatch.delenv("MUTUAL_AUDIT_PUBLIC_KEY")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


async def _append(subjects: list[str]) -> None:
    """One event per entry, naming that subject (or nobody for '')."""
    actor = system_actor("test")
    await append_many([(actor, Entry("read", "crm_person", "customer_service", subjects=(s,) if s else ()))
                       for s in subjects], get_kernel().policies.version)


async def _export(path: Path, **kwargs: Any) -> list[dict[str, Any]]:
    export = await service.export_events(staff("compliance"), "jsonl", **kwargs)
    text = "".join([chunk async for chunk in export.chunks])
    path.write_text(text)
    return [json.loads(line) for line in text.splitlines()]


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _seqs(lines: list[dict[str, Any]]) -> list[int]:
    return [line["seq"] for line in lines if line["kind"] == "event"]


async def test_an_unfiltered_export_verifies_intact_against_the_pinned_key(db: None, tmp_path: Path) -> None:
    await _append([ERIKA_PSEUDONYM] * 6)
    path = tmp_path / "audit.jsonl"
    lines = await _export(path)
    assert _seqs(lines) == list(range(1, 8))  # and the export's own event
    result = verify_export(path, pinned_keys())
    assert result.verdict == "INTACT", result.problem or result.unanchored
    assert (result.checked, result.omitted) == (7, 0)
    assert main(["audit", "verify", "--file", str(path)]) == 0


async def test_an_event_deleted_from_the_middle_of_an_export_is_named_by_its_seq(db: None, tmp_path: Path) -> None:
    await _append([ERIKA_PSEUDONYM] * 6)
    path = tmp_path / "audit.jsonl"
    lines = await _export(path)
    _write(path, [line for line in lines if line.get("seq") != 4 or line["kind"] != "event"])
    result = verify_export(path, pinned_keys())
    assert result.verdict == "BROKEN" and result.first_bad_seq == 4
    assert "event 4 missing from the export" in result.problem
    # The old check only linked consecutive seqs, so a gap passed; now the next one's link is not enough.
    assert main(["audit", "verify", "--file", str(path)]) == 1
    event_4 = next(line for line in lines if line.get("seq") == 4)
    proof = {"kind": "omitted", "seq": 4, "events": [[2, content_digest(row_text(event_4))]]}
    _write(path, [proof if line is event_4 else line for line in lines])  # hidden behind a valid digest
    hidden = verify_export(path, pinned_keys())
    assert hidden.verdict == "BROKEN" and "left out of an export that says it has no filter" in hidden.problem


async def test_a_cut_tail_fails_against_the_head_signed_at_export(db: None, tmp_path: Path) -> None:
    await _append([ERIKA_PSEUDONYM] * 6)
    path = tmp_path / "audit.jsonl"
    lines = await _export(path)
    assert lines[-1]["kind"] == "end" and lines[-1]["head"]["seq"] == 7 and "signature" in lines[-1]["head"]
    _write(path, [line for line in lines if line.get("seq", 0) < 5 or line["kind"] != "event"])
    result = verify_export(path, pinned_keys())
    assert result.verdict == "BROKEN" and result.first_bad_seq == 5
    assert "ends at event 4, but the head signed at export is event 7" in result.problem
    _write(path, lines[:-1])  # the end line itself removed
    assert "cut short" in verify_export(path, pinned_keys()).problem


def _re_sign(lines: list[dict[str, Any]], key: Ed25519PrivateKey) -> list[dict[str, Any]]:
    """What a forger does after rewriting: recompute every hash and sign every checkpoint and the head anew."""
    log_id, prev = lines[0]["log_id"], "0" * 64
    for line in lines[1:-1]:
        line["prev_hash"] = prev
        line["hash"] = prev = event_hash(prev, line, log_id)
    end = lines[-1]
    end["checkpoints"] = [sign_checkpoint(key, cp["seq"], lines[cp["seq"]]["hash"], cp["at"], log_id)
                          for cp in end["checkpoints"]]
    end["head"] = sign_checkpoint(key, end["head"]["seq"], prev, end["head"]["at"], log_id)
    return lines


async def test_a_rewritten_export_re_signed_with_another_key_fails_against_the_pinned_key_and_is_unanchored_without(
        db: None, tmp_path: Path, unpinned: None, monkeypatch: pytest.MonkeyPatch) -> None:
    await _append([ERIKA_PSEUDONYM] * 6)
    path = tmp_path / "audit.jsonl"
    lines = await _export(path)
    lines[3]["purpose"] = "marketing"
    _write(path, _re_sign(lines, Ed25519PrivateKey.generate()))
    result = verify_export(path, {_test_key_pin()})
    assert result.verdict == "BROKEN"
    assert "not a trusted audit signing key" in result.problem
    unanchored = verify_export(path)
    assert unanchored.ok and unanchored.verdict == "UNANCHORED" and "no public key was pinned" in unanchored.unanchored
    assert main(["audit", "verify", "--file", str(path)]) == 3  # not 0: "intact" is never said without a pin
    assert main(["audit", "verify", "--file", str(path), "--public-key", _test_key_pin()]) == 1


def _test_key_pin() -> str:
    """The installation's own key, as an auditor who was given `mutual audit public-key` holds it."""
    key = load_signing_key()
    assert key is not None
    return pin(base64.b64encode(public_raw(key)).decode())


async def test_a_filtered_export_proves_the_events_it_left_out_and_verifies(db: None, tmp_path: Path) -> None:
    await _append([ERIKA_PSEUDONYM, MAX_PSEUDONYM, MAX_PSEUDONYM, ERIKA_PSEUDONYM, MAX_PSEUDONYM, ""])
    path = tmp_path / "erika.jsonl"
    lines = await _export(path, subjects=service.Subjects((ERIKA_PSEUDONYM,)))
    assert _seqs(lines) == [1, 4, 7]  # Erika's events and the export's own, which names her
    omitted = [line for line in lines if line["kind"] == "omitted"]
    assert [(o["seq"], len(o["events"])) for o in omitted] == [(2, 2), (5, 2)]
    assert all(isinstance(e[1], str) and len(e[1]) == 64 for o in omitted for e in o["events"])
    assert MAX_PSEUDONYM not in path.read_text()  # left-out events are digests, not content
    result = verify_export(path, pinned_keys())
    assert result.verdict == "INTACT", result.problem
    assert (result.checked, result.omitted) == (3, 4)


async def test_tampering_with_a_filtered_export_is_detected(db: None, tmp_path: Path) -> None:
    await _append([ERIKA_PSEUDONYM, MAX_PSEUDONYM, MAX_PSEUDONYM, ERIKA_PSEUDONYM, MAX_PSEUDONYM])
    path = tmp_path / "erika.jsonl"
    lines = await _export(path, subjects=service.Subjects((ERIKA_PSEUDONYM,)))
    original = json.dumps(lines)

    def tampered(change: Any) -> Any:
        copy = json.loads(original)
        change(copy)
        _write(path, copy)
        return verify_export(path, pinned_keys())

    event_4 = next(i for i, line in enumerate(lines) if line.get("seq") == 4 and line["kind"] == "event")
    modified = tampered(lambda ls: ls[event_4].update(purpose="marketing"))
    assert modified.verdict == "BROKEN" and modified.first_bad_seq == 4 and "modified" in modified.problem

    def re_hash_included(ls: list[dict[str, Any]]) -> None:  # changed and re-hashed: the next link breaks
        ls[event_4]["purpose"] = "marketing"
        ls[event_4]["hash"] = event_hash(ls[event_4]["prev_hash"], ls[event_4], ls[0]["log_id"])
    assert tampered(re_hash_included).verdict == "BROKEN"

    def forge_digest(ls: list[dict[str, Any]]) -> None:  # a left-out event swapped for another
        next(line for line in ls if line["kind"] == "omitted")["events"][0][1] = "f" * 64
    assert tampered(forge_digest).verdict == "BROKEN"

    dropped = tampered(lambda ls: ls.remove(next(line for line in ls if line["kind"] == "omitted")))
    assert dropped.verdict == "BROKEN" and dropped.first_bad_seq == 2 and "events 2-3 missing" in dropped.problem


async def test_an_export_filtered_by_day_and_action_verifies_and_leaves_the_rest_out(db: None, tmp_path: Path) -> None:
    await _append([ERIKA_PSEUDONYM] * 3)
    today = dt.datetime.now(dt.UTC).date()
    path = tmp_path / "today.jsonl"
    lines = await _export(path, filters=service.AuditFilters(start=today, end=today, action="export"))
    assert _seqs(lines) == [4]
    result = verify_export(path, pinned_keys())
    assert result.verdict == "INTACT" and (result.checked, result.omitted) == (1, 3)
    empty = await _export(path, filters=service.AuditFilters(end=today - dt.timedelta(days=1)))
    assert _seqs(empty) == [] and verify_export(path, pinned_keys()).omitted == 5


async def test_a_filtered_export_over_old_format_events_links_them_by_their_stored_hashes(
        db: None, tmp_path: Path) -> None:
    await _append([ERIKA_PSEUDONYM, MAX_PSEUDONYM, ERIKA_PSEUDONYM])
    await _to_format_1()
    path = tmp_path / "erika.jsonl"
    lines = await _export(path, subjects=service.Subjects((ERIKA_PSEUDONYM,)))
    omitted = next(line for line in lines if line["kind"] == "omitted")
    assert omitted["events"][0][0] == 1 and len(omitted["events"][0]) == 3
    assert verify_export(path, pinned_keys()).verdict == "INTACT"


async def _to_format_1() -> None:
    """Re-hash every stored event the old way and drop the checkpoints: a chain written before format 2."""
    prev = "0" * 64
    for event in map(dict, await raw("SELECT * FROM audit_event ORDER BY seq")):
        event["format_version"] = 1
        digest = link(1, prev, row_text(event), "")
        await raw('UPDATE audit_event SET prev_hash = {}, "hash" = {}, format_version = 1 WHERE seq = {}',
                  prev, digest, event["seq"])
        prev = digest
    await raw("DELETE FROM audit_checkpoint")
    await raw("UPDATE audit_head SET \"hash\" = {} WHERE name = 'main'", prev)


async def test_an_export_of_a_pruned_chain_starts_from_its_signed_anchor_and_a_forged_start_fails(
        db: None, tmp_path: Path) -> None:
    from server.audit.checkpoints import _checkpoint_at

    await _append([ERIKA_PSEUDONYM] * 6)
    third = (await raw('SELECT "hash" FROM audit_event WHERE seq = 3'))[0]["hash"]
    await _checkpoint_at(3, third)  # what `mutual audit prune` signs before deleting events 1-3
    await raw("DELETE FROM audit_event WHERE seq <= 3")
    path = tmp_path / "pruned.jsonl"
    lines = await _export(path)
    assert lines[0]["first_seq"] == 4 and _seqs(lines) == [4, 5, 6, 7]
    assert verify_export(path, pinned_keys()).verdict == "INTACT"
    lines[0]["first_seq"] = 5  # event 4 dropped and the start moved past it: no signed anchor at 4
    _write(path, [line for line in lines if line.get("seq") != 4])
    result = verify_export(path, pinned_keys())
    assert result.verdict == "BROKEN" and "no validly signed checkpoint at event 4 anchors it" in result.problem
