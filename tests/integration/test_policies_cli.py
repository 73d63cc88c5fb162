"""`mutual policies check`: validation, the role × field matrix, and the changes against the running version."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from server.policy import load_policies
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
    return subprocess.run([*_command(), *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MUTUAL_VAR_DIR": str(var_dir)})


def _copy(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(REPO / "policies", tmp_path / name))


def _edit(directory: Path, name: str, old: str, new: str) -> int:
    """Replace the one occurrence of ``old``; returns its line number."""
    path = directory / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {name}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def test_valid_policies_exit_0_and_print_the_matrix(tmp_path: Path) -> None:
    result = _check(tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"valid (version {load_policies(REPO / 'policies').version[:12]})" in out
    header = re.search(r"^crm_person\n\s+field\s+(.+)$", out, re.MULTILINE)
    assert header and header.group(1).split() == ["admin", "compliance", "sales", "support", "customer"]
    assert re.search(r"^\s+birth_date\s+mask\s+deny\s+mask\s+mask\s+allow$", out, re.MULTILINE), out
    assert re.search(r"^\s+body\s+allow\s+deny\s+allow\s+allow\s+deny$", out, re.MULTILINE), out
    assert not re.search(r"^\s+created_at\s", out, re.MULTILINE), "non-personal fields are left out"
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
    await record_loaded(running, load_policies(running).version, path=tmp_path / "var" / SNAPSHOT_NAME)
    _edit(edited, "fields.yml", "birth_date:  {category: identity.birth_date, sensitivity: high,",
          "birth_date:  {category: identity.birth_date, sensitivity: normal,")
    _edit(edited, "access.yml", "    categories: [identity, contact]\n", "    categories: [identity]\n")
    result = _check(tmp_path / "var", "--dir", str(edited))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf"^running version {load_policies(running).version[:12]} \(loaded \d{{4}}-\d\d-\d\d ", out,
                     re.MULTILINE), out
    assert "role sales, crm_person.birth_date, read for sales: mask -> allow" in out
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
