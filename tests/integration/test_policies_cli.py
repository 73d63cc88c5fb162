"""`mutual policies check`: validation, the role × field matrix, and the changes against the running version."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from server.policy import load_policies
from server.policy.report import matrix
from server.policy.snapshot import SNAPSHOT_NAME, record_loaded

REPO = Path(__file__).resolve().parents[2]


def _command() -> list[str]:
    """`mutual policies check` once server.cli registers the group; the module's own main until then."""
    from server.cli import build_parser

    groups = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    module = "server.cli" if "policies" in groups.choices else "server.policy.cli"
    prefix = ["policies"] if module == "server.cli" else []
    return [sys.executable, "-m", module, *prefix, "check"]


def _check(var_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_command(), *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MUTUAL_VAR_DIR": str(var_dir)})


def _copy(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(REPO / "policies", tmp_path / name))


def _set_rule(directory: Path, rule_id: str, **changes: object) -> None:
    """Change keys of one access rule, found by id (so concurrent edits elsewhere do not matter)."""
    path = directory / "access.yml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    next(r for r in doc["rules"] if r["id"] == rule_id).update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _printed_matrix(out: str) -> dict[tuple[str, str, str], str]:
    """(role, table, field) -> the printed cell, cut at the header's column starts."""
    cells: dict[tuple[str, str, str], str] = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("  field "):
            continue
        table, header = lines[i - 1], line
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        names = header.split()
        for row in lines[i + 1:]:
            if not row.startswith("  "):
                break
            values = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
            cells.update({(role, table, values[0]): value for role, value in zip(names[1:], values[1:])})
    return cells


def _edit(directory: Path, name: str, old: str, new: str) -> int:
    """Replace the one occurrence of ``old``; returns its line number."""
    path = directory / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {name}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def test_valid_policies_exit_0_and_print_the_matrix(tmp_path: Path) -> None:
    policies = load_policies(REPO / "policies")
    result = _check(tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"valid (version {policies.version[:12]})" in out
    header = re.search(r"^crm_person\n  field\s+(.+)$", out, re.MULTILINE)
    assert header and header.group(1).split() == ["admin", "compliance", "sales", "support", "customer"]
    printed = _printed_matrix(out)
    assert printed["sales", "crm_person", "birth_date"].startswith("mask")
    assert printed["compliance", "crm_note", "body"] == "deny"
    assert printed["customer", "crm_person", "email"] == "allow"
    assert printed == {(role, row.table, row.field): str(cell)
                       for row in matrix(policies) for role, cell in row.cells.items()}
    assert ("admin", "crm_person", "created_at") not in printed, "non-personal fields are left out"
    assert "no running version recorded yet" in out


def test_a_broken_policy_exits_1_naming_file_and_line(tmp_path: Path) -> None:
    broken = _copy(tmp_path, "broken")
    line = _edit(broken, "access.yml", "    roles: [sales]\n    actions: [read]\n",
                 "    roles: [saels]\n    actions: [read]\n")
    result = _check(tmp_path, "--dir", str(broken))
    assert result.returncode == 1
    assert f"policy access.yml line {line}: unknown role 'saels'" in result.stderr
    assert result.stdout == ""


async def test_a_snapshot_of_other_policies_prints_each_changed_decision(tmp_path: Path) -> None:
    running, edited = _copy(tmp_path, "running"), _copy(tmp_path, "edited")
    _set_rule(running, "sales-read-people", scope="all")
    _set_rule(running, "support-read-write-people", scope="all")
    await record_loaded(running, load_policies(running).version, path=tmp_path / "var" / SNAPSHOT_NAME)
    _set_rule(edited, "sales-read-people", scope="assigned")
    _set_rule(edited, "support-read-write-people", scope="all", categories=["identity"])
    result = _check(tmp_path / "var", "--dir", str(edited))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf"^running version {load_policies(running).version[:12]} \(loaded \d{{4}}-\d\d-\d\d ", out,
                     re.MULTILINE), out
    assert "role sales, crm_person.phone, read for sales: allow -> deny; allow if assigned" in out
    assert "role support, crm_person.phone, read for customer_service: allow -> deny" in out
    assert "role support, crm_person.email, write for customer_service: allow -> deny" in out
    assert "no running version recorded yet" not in out


async def test_checking_the_running_version_itself_reports_nothing_changed(tmp_path: Path) -> None:
    policies = REPO / "policies"
    await record_loaded(policies, load_policies(policies).version, path=tmp_path / SNAPSHOT_NAME)
    result = _check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the files checked are the running version: nothing changed" in result.stdout
    assert " -> " not in result.stdout


def test_register_adds_policies_check_to_a_command_parser(tmp_path: Path) -> None:
    from server.policy import cli as policy_cli

    parser = argparse.ArgumentParser(prog="mutual")
    policy_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["policies", "check", "--dir", str(tmp_path)])
    assert args.func is policy_cli.cmd_check and args.dir == str(tmp_path)
