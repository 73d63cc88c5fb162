"""Key-encryption keys rotate online and resumably, running processes follow, and old keys retire safely."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import gateway
from server.db import raw
from server.kernel import get_kernel
from server.vault import keys as keys_module
from server.vault.cipher import WrappedKey, unwrap_data_key
from server.vault.keys import (
    FileKeyProvider,
    KeyError_,
    add_kek,
    load_key_provider,
    new_key_document,
    read_key_document,
    remove_kek,
    write_key_document,
)
from server.vault.rotation import RotationResult, key_status, retire, rotate
from tests.support import ERIKA, MAX, staff

REPO = Path(__file__).resolve().parents[2]
PURPOSE = "customer_service"
PEOPLE = 6


def _forget_loaded_keys() -> None:
    load_key_provider.cache_clear()
    get_kernel.cache_clear()


@pytest.fixture
def key_file(db: None) -> Iterator[Path]:
    """The suite's key file, restored afterwards so that later tests see the keys they started with."""
    path = Path(os.environ["MUTUAL_KEY_FILE"])
    saved = path.read_bytes()
    _forget_loaded_keys()
    yield path
    path.write_bytes(saved)
    _forget_loaded_keys()


async def _people(count: int = PEOPLE) -> list[uuid.UUID]:
    generated = [
        {"given_name": f"Testperson{i}", "family_name": "Rotation", "email": f"rotation{i}@example.org",
         "phone": f"+49 30 555000{i}"}
        for i in range(count - 2)
    ]
    return [await gateway.create_person(staff("admin"), purpose=PURPOSE, values=values)
            for values in [ERIKA, MAX, *generated][:count]]


async def _read(ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, str | None]]:
    return {pid: (await gateway.get_person(staff("admin"), purpose=PURPOSE, person_id=pid)).values
            for pid in ids}


async def _key_rows() -> dict[str, dict[str, Any]]:
    rows = await raw("SELECT subject_id, key_id, kek_id, wrapped FROM vault_subject_key")
    return {str(row["subject_id"]): row for row in rows}


async def _tokens() -> list[dict[str, Any]]:
    return await raw("SELECT id, given_name, family_name, email, phone, address FROM crm_person ORDER BY id")


def _kek_ids(path: Path) -> set[str]:
    return set(read_key_document(path)["kek"]["keys"])


async def test_rotating_rewraps_every_data_key_under_a_new_active_kek_and_everyone_reads_back_the_same(
    key_file: Path,
) -> None:
    ids = await _people()
    before, keys_before, tokens_before = await _read(ids), await _key_rows(), await _tokens()
    assert {row["kek_id"] for row in keys_before.values()} == {"kek-1"}
    calls: list[tuple[int, int]] = []

    result = await rotate(key_file, batch=4, progress=lambda done, total: calls.append((done, total)))

    assert result == RotationResult(active="kek-2", added="kek-2", rewrapped=PEOPLE, remaining=0)
    assert calls == [(4, PEOPLE), (PEOPLE, PEOPLE)]
    assert read_key_document(key_file)["kek"]["active"] == "kek-2"
    assert _kek_ids(key_file) == {"kek-1", "kek-2"}
    keys_after = await _key_rows()
    assert {row["kek_id"] for row in keys_after.values()} == {"kek-2"}
    for subject, row in keys_after.items():
        assert row["key_id"] == keys_before[subject]["key_id"]
        assert row["wrapped"] != keys_before[subject]["wrapped"]
    assert await _tokens() == tokens_before  # field tokens name the data key, which did not change
    _forget_loaded_keys()
    assert await _read(ids) == before


async def test_key_status_counts_the_data_keys_each_kek_wraps(key_file: Path) -> None:
    await _people()
    assert await key_status() == {"active": "kek-1", "keks": {"kek-1": PEOPLE}, "data_keys": PEOPLE,
                                  "unknown": []}
    await rotate(key_file, batch=1, stop_after=2)
    assert await key_status() == {"active": "kek-2", "keks": {"kek-1": PEOPLE - 2, "kek-2": 2},
                                  "data_keys": PEOPLE, "unknown": []}
    await rotate(key_file)
    assert (await key_status())["keks"] == {"kek-1": 0, "kek-2": PEOPLE}


async def test_an_interrupted_rotation_leaves_everyone_readable_and_the_next_run_finishes_it_without_a_third_kek(
    key_file: Path,
) -> None:
    ids = await _people()
    before = await _read(ids)

    first = await rotate(key_file, batch=1, stop_after=2)

    assert first == RotationResult(active="kek-2", added="kek-2", rewrapped=2, remaining=PEOPLE - 2)
    assert not first.complete
    keks = sorted(row["kek_id"] for row in (await _key_rows()).values())
    assert keks == ["kek-1"] * (PEOPLE - 2) + ["kek-2"] * 2
    _forget_loaded_keys()  # a freshly started process, reading both keys from the file
    assert await _read(ids) == before

    second = await rotate(key_file, batch=3)

    assert second == RotationResult(active="kek-2", added=None, rewrapped=PEOPLE - 2, remaining=0)
    assert _kek_ids(key_file) == {"kek-1", "kek-2"}
    assert {row["kek_id"] for row in (await _key_rows()).values()} == {"kek-2"}
    assert await _read(ids) == before


async def test_a_rotation_with_nothing_left_to_rewrap_adds_the_next_kek(key_file: Path) -> None:
    await _people(2)
    await rotate(key_file)
    again = await rotate(key_file)
    assert again == RotationResult(active="kek-3", added="kek-3", rewrapped=2, remaining=0)
    assert _kek_ids(key_file) == {"kek-1", "kek-2", "kek-3"}


async def test_retiring_a_kek_is_refused_while_data_keys_use_it_or_it_is_active_and_allowed_afterwards(
    key_file: Path,
) -> None:
    ids = await _people()
    before = await _read(ids)
    await rotate(key_file, batch=1, stop_after=2)

    with pytest.raises(KeyError_, match=rf"'kek-1'.* {PEOPLE - 2} data keys .*`mutual keys rotate`"):
        await retire(key_file, "kek-1")
    assert _kek_ids(key_file) == {"kek-1", "kek-2"}
    with pytest.raises(KeyError_, match="'kek-2' is the active key"):
        await retire(key_file, "kek-2")

    await rotate(key_file)
    await retire(key_file, "kek-1")

    assert _kek_ids(key_file) == {"kek-2"}
    with pytest.raises(KeyError_, match="'kek-1'"):
        FileKeyProvider.from_file(key_file).kek("kek-1")
    _forget_loaded_keys()
    assert await _read(ids) == before


async def test_a_provider_loaded_before_the_rotation_unwraps_data_keys_rewrapped_under_the_new_kek(
    key_file: Path,
) -> None:
    ids = await _people()
    before = await _read(ids)  # the "running app": its kernel and provider are loaded now
    running = get_kernel().keys
    assert isinstance(running, FileKeyProvider) and set(running.keks) == {"kek-1"}

    await rotate(key_file)

    for subject, row in (await _key_rows()).items():
        dk = unwrap_data_key(running, uuid.UUID(subject), WrappedKey(row["key_id"], row["kek_id"], row["wrapped"]))
        assert dk.key_id == row["key_id"]
    assert get_kernel().keys is running
    assert await _read(ids) == before


async def test_a_running_provider_wraps_new_data_keys_under_the_kek_a_rotation_made_active(key_file: Path) -> None:
    await _people(1)
    assert get_kernel().keys.active_kek_id == "kek-1"
    await rotate(key_file)
    # without following the file, this process would keep wrapping under kek-1, which may be retired
    newcomer = await gateway.create_person(staff("admin"), purpose=PURPOSE, values=MAX)
    assert (await _key_rows())[str(newcomer)]["kek_id"] == "kek-2"


def test_a_known_kek_is_served_from_memory_and_an_unknown_one_rereads_the_file_once(
    key_file: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = FileKeyProvider.from_file(key_file)
    reads: list[Path] = []
    real_read = keys_module.read_key_document

    def counted_read(path: Path) -> dict[str, Any]:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(keys_module, "read_key_document", counted_read)
    for _ in range(3):
        assert len(provider.kek("kek-1")) == 32
        assert provider.active_kek_id == "kek-1"
    assert reads == []

    doc, new_id = add_kek(read_key_document(key_file))
    write_key_document(key_file, doc)
    assert len(provider.kek(new_id)) == 32
    assert reads == [key_file]
    with pytest.raises(KeyError_, match="'kek-9' is not in the key file"):
        provider.kek("kek-9")
    assert len(reads) == 2


async def test_a_kek_missing_from_the_key_file_stops_reads_and_rotation_with_an_error_naming_it(
    key_file: Path,
) -> None:
    ids = await _people(2)
    with_new, _ = add_kek(read_key_document(key_file))
    write_key_document(key_file, remove_kek(with_new, "kek-1"))
    _forget_loaded_keys()

    with pytest.raises(KeyError_, match="key-encryption key 'kek-1' is not in the key file"):
        await gateway.get_person(staff("admin"), purpose=PURPOSE, person_id=ids[0])
    with pytest.raises(KeyError_, match="'kek-1'"):
        await rotate(key_file)
    assert {row["kek_id"] for row in (await _key_rows()).values()} == {"kek-1"}
    assert _kek_ids(key_file) == {"kek-2"}  # no key added on top of the broken state
    status = await key_status()
    assert status["unknown"] == ["kek-1"] and status["keks"] == {"kek-1": 2, "kek-2": 0}


async def test_rotate_and_retire_refuse_an_inline_key_document(
    key_file: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _people(1)
    saved = key_file.read_bytes()
    monkeypatch.setenv("MUTUAL_KEYS", saved.decode())
    with pytest.raises(KeyError_, match="MUTUAL_KEYS"):
        await rotate(key_file)
    with pytest.raises(KeyError_, match="MUTUAL_KEYS"):
        await retire(key_file, "kek-1")
    assert key_file.read_bytes() == saved
    assert {row["kek_id"] for row in (await _key_rows()).values()} == {"kek-1"}


def test_the_key_file_is_replaced_atomically_with_mode_600_and_no_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{}")
    path.chmod(0o644)
    doc = new_key_document()
    write_key_document(path, doc)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_document(path) == doc
    assert os.listdir(tmp_path) == ["keys.json"]

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_key_document(path, add_kek(doc)[0])
    assert read_key_document(path) == doc
    assert os.listdir(tmp_path) == ["keys.json"]


def test_a_new_kek_is_numbered_after_the_highest_becomes_active_and_keeps_the_old_ones() -> None:
    doc = new_key_document()
    doc["kek"]["keys"]["kek-7"] = keys_module._b64(os.urandom(32))
    new, key_id = add_kek(doc)
    assert key_id == "kek-8"
    assert new["kek"]["active"] == "kek-8" and set(new["kek"]["keys"]) == {"kek-1", "kek-7", "kek-8"}
    assert doc["kek"]["active"] == "kek-1" and "kek-8" not in doc["kek"]["keys"]
    assert len(FileKeyProvider.from_document(new, "new").kek("kek-8")) == 32
    with pytest.raises(KeyError_, match="active"):
        remove_kek(new, "kek-8")
    assert set(remove_kek(new, "kek-1")["kek"]["keys"]) == {"kek-7", "kek-8"}


def _keys_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.vault.keys_cli", *args], check=False,
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def _status_line(output: str, key_id: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(key_id + " "))


async def test_the_keys_commands_show_status_rotate_and_retire_from_the_command_line(key_file: Path) -> None:
    await _people(3)

    status = _keys_cli("status")
    assert status.returncode == 0, status.stderr
    assert re.fullmatch(r"kek-1\s+\*\s+3", _status_line(status.stdout, "kek-1"))

    rotated = _keys_cli("rotate", "--batch", "2")
    assert rotated.returncode == 0, rotated.stderr
    assert "added key-encryption key kek-2" in rotated.stdout
    assert "rewrapped 3 data key(s) under kek-2; 0 remain" in rotated.stdout
    assert "rewrapping data keys" in rotated.stderr  # the progress bar
    assert {row["kek_id"] for row in (await _key_rows()).values()} == {"kek-2"}

    after = _keys_cli("status")
    assert after.returncode == 0, after.stderr
    assert re.fullmatch(r"kek-1\s+0", _status_line(after.stdout, "kek-1"))
    assert re.fullmatch(r"kek-2\s+\*\s+3", _status_line(after.stdout, "kek-2"))

    refused = _keys_cli("retire", "kek-2")
    assert refused.returncode == 1 and "'kek-2' is the active key" in refused.stderr
    retired = _keys_cli("retire", "kek-1")
    assert retired.returncode == 0, retired.stderr
    assert "kek-1" not in _keys_cli("status").stdout


async def test_the_keys_commands_refuse_to_overwrite_a_key_file_or_rewrite_an_inline_document(
    key_file: Path, tmp_path: Path,
) -> None:
    saved = key_file.read_bytes()
    exists = _keys_cli("init", "--file", str(key_file))
    assert exists.returncode == 1 and "refusing to overwrite" in exists.stderr
    fresh = tmp_path / "new" / "keys.json"
    made = _keys_cli("init", "--file", str(fresh))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    FileKeyProvider.from_document(json.loads(fresh.read_text()), str(fresh))

    for command in (["rotate"], ["retire", "kek-1"]):
        inline = _keys_cli(*command, MUTUAL_KEYS=saved.decode())
        assert inline.returncode == 1
        assert "MUTUAL_KEYS" in inline.stderr and "cannot rewrite" in inline.stderr
    assert key_file.read_bytes() == saved
