"""Start-up refuses to run on broken policies or missing keys, and the CLI verifies the chain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from server import gateway
from server.db import raw
from server.kernel import get_kernel
from tests.support import ERIKA, staff

REPO = Path(__file__).resolve().parents[2]


def _mutual(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_an_invalid_policy_stops_start_up_naming_file_and_line(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    access = policies / "access.yml"
    lines = access.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "effect: deny" in line)
    lines[index] = lines[index].replace("effect: deny", "effect: maybe")
    access.write_text("\n".join(lines) + "\n")
    result = _mutual("migrate", MUTUAL_POLICIES_DIR=str(policies))
    assert result.returncode != 0
    assert f"access.yml line {index + 1}" in result.stderr
    assert "maybe" in result.stderr


def test_a_missing_key_file_stops_start_up_outside_development_mode(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "keys.json"
    result = _mutual("migrate", MUTUAL_KEY_FILE=str(missing))
    assert result.returncode != 0
    assert f"key file {missing} does not exist" in result.stderr
    assert not missing.exists()


async def test_audit_verify_names_the_first_modified_event(db: None) -> None:
    pid = await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    await gateway.get_person(staff("admin"), purpose="customer_service", person_id=pid)
    unsigned = _mutual("audit", "verify")  # consistent, but no signed head yet: not called intact
    assert unsigned.returncode == 3 and "UNANCHORED" in unsigned.stdout, unsigned.stderr
    assert _mutual("audit", "checkpoint").returncode == 0
    intact = _mutual("audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "intact: 2 events verified" in intact.stdout
    await raw("UPDATE audit_event SET purpose = 'sales' WHERE seq = 2")
    broken = _mutual("audit", "verify")
    assert broken.returncode == 1
    assert "event 2" in broken.stderr and "modified" in broken.stderr


async def test_a_key_file_from_another_database_is_refused_at_start_up_with_a_message(db: None) -> None:
    import pytest

    from server.vault.keys import FileKeyProvider, KeyError_, new_key_document
    from server.vault.store import check_keys_match

    await gateway.create_person(staff("admin"), purpose="customer_service", values=ERIKA)
    await check_keys_match(get_kernel().keys)  # the right keys pass
    stranger = FileKeyProvider.from_document(new_key_document(), "another key file")
    with pytest.raises(KeyError_, match="'kek-1' does not unwrap this database's data keys"):
        await check_keys_match(stranger)


async def test_starting_with_changed_policies_records_a_policy_change_event(db: None, tmp_path: Path) -> None:
    import json as _json

    from backoffice.app import create_app
    from server.policy.snapshot import snapshot_path

    app = create_app()
    async with app.lifespan():
        pass  # records the snapshot of the policies in force
    assert await raw("SELECT 1 FROM audit_event WHERE action = 'policy_change'") == []
    path = snapshot_path()
    data = _json.loads(path.read_text())
    data["version"] = "0" * 64  # as if the last start had other policies
    path.write_text(_json.dumps(data))
    async with app.lifespan():
        pass
    events = await raw("SELECT face, fields FROM audit_event WHERE action = 'policy_change'")
    assert len(events) == 1 and events[0]["face"] == "backoffice"
    assert _json.loads(events[0]["fields"]) == {"from": "000000000000", "to": get_kernel().policies.version[:12]}
