"""`mutual keys rotate-index FIELD`: a new key for one search index, rebuilt in batches, resumable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import gateway
from server.db import raw
from server.gateway.indexing import rebuild_index
from server.kernel import get_kernel
from server.vault.keys import add_index_key, load_key_provider, read_key_document, write_key_document
from tests.support import ERIKA, MAX, staff

REPO = Path(__file__).resolve().parents[2]
ADMIN = staff("admin")


@pytest.fixture
def key_file(db: None) -> Iterator[Path]:
    path = Path(os.environ["MUTUAL_KEY_FILE"])
    saved = path.with_name("keys.before-index-rotation.json")
    shutil.copy2(path, saved)
    load_key_provider.cache_clear()
    get_kernel.cache_clear()
    yield path
    shutil.copy2(saved, path)
    load_key_provider.cache_clear()
    get_kernel.cache_clear()


async def _people() -> list:
    ids = [await gateway.create_person(ADMIN, purpose="customer_service", values=v) for v in (ERIKA, MAX)]
    for i in range(5):
        ids.append(await gateway.create_person(ADMIN, purpose="customer_service", values={
            "given_name": f"Jana{i}", "family_name": "Beispiel", "email": f"jana{i}@example.com"}))
    return ids


async def _found(field: str, query: str) -> set:
    return {r.id for r in await gateway.find_people(ADMIN, purpose="customer_service", field=field, query=query)}


async def test_rotating_the_name_index_from_the_command_line_rebuilds_it_under_a_new_key(key_file: Path) -> None:
    ids = await _people()
    result = subprocess.run([sys.executable, "-m", "server.cli", "keys", "rotate-index", "name", "--batch", "2"],
                            cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "name index rebuilt under name-2 for 7 people; retired name-1" in result.stdout
    doc = json.loads(key_file.read_text())
    assert list(doc["index"]["name"]["keys"]) == ["name-2"]
    tokens = await raw("SELECT token_index FROM crm_person_token")
    assert tokens and all(t["token_index"].startswith("name-2:") for t in tokens)
    # this process's provider follows the file: search keeps working with the new key
    assert await _found("name", "mustermann") == set(ids[:2])
    assert await _found("name", "beispiel") == set(ids[2:])
    status = subprocess.run([sys.executable, "-m", "server.cli", "keys", "status"], cwd=REPO, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.strip()}
    assert lines["name-2"][1:] == ["*", "14"]  # 7 people, two name words each
    assert lines["email-1"][1:] == ["*", "7"] and "name-1" not in lines
    events = await raw("SELECT action, entity FROM audit_event WHERE action = 'rotate_index'")
    assert [(e["action"], e["entity"]) for e in events] == [("rotate_index", "index:name")]


async def test_an_interrupted_email_index_rebuild_keeps_search_working_and_resumes(key_file: Path) -> None:
    ids = await _people()
    doc, new_id = add_index_key(read_key_document(key_file), "email")
    write_key_document(key_file, doc)
    calls = []

    def stop_after_first_batch(n: int) -> None:
        calls.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rebuild_index("email", batch=3, progress=stop_after_first_batch)
    values = [r["email_index"] for r in await raw("SELECT email_index FROM crm_person")]
    assert sum(v.startswith(f"{new_id}:") for v in values) == 3 and calls == [3]
    # mid-rebuild, old and new values coexist and lookups ask for both
    assert await _found("email", ERIKA["email"]) == {ids[0]}
    assert await _found("email", "jana4@example.com") == {ids[6]}
    assert await rebuild_index("email", batch=3) == 4
    values = [r["email_index"] for r in await raw("SELECT email_index FROM crm_person")]
    assert all(v.startswith(f"{new_id}:") for v in values)
    assert await _found("email", MAX["email"]) == {ids[1]}


async def test_key_rotation_through_mutual_is_recorded_in_the_audit(key_file: Path) -> None:
    await _people()
    result = subprocess.run([sys.executable, "-m", "server.cli", "keys", "rotate"], cwd=REPO, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    events = await raw("SELECT action, entity, outcome FROM audit_event WHERE entity = 'keys'")
    assert [(e["action"], e["outcome"]) for e in events] == [("keys_rotate", "ok")]
    assert "kek-2" in json.loads(key_file.read_text())["kek"]["keys"]
