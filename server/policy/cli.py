"""The `mutual policies` commands: check the policy files and show what they change against the running version."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.cli_groups import Commands, register_group, run_standalone
from server.policy.engine import PolicySet
from server.policy.loader import PolicyError, load_policies
from server.policy.report import MatrixRow, diff, matrix, ordered_roles
from server.policy.snapshot import SCHEMA_DIR, load_snapshot, snapshot_path, snapshot_policies
from server.settings import get_settings


def format_matrix(rows: list[MatrixRow], roles: list[str]) -> list[str]:
    """A text table per table: a row per field, a column per role."""
    lines: list[str] = []
    width = max([len("field"), *(len(r.field) for r in rows)])
    columns = [max([len(role), *(len(str(r.cells[role])) for r in rows)]) for role in roles]
    table = None
    for row in rows:
        if row.table != table:
            table = row.table
            lines.append("")
            lines.append(table)
            lines.append("  " + " ".join([f"{'field':<{width}}", *(f"{r:<{w}}" for r, w in zip(roles, columns))])
                         .rstrip())
        cells = (f"{row.cells[role]!s:<{w}}" for role, w in zip(roles, columns))
        lines.append("  " + " ".join([f"{row.field:<{width}}", *cells]).rstrip())
    return lines


def _running_version(current: PolicySet, schemas: Path) -> list[str]:
    try:
        snapshot = load_snapshot()
    except ValueError as exc:
        return [f"running version unknown: {exc}"]
    if snapshot is None:
        return [(f"no running version recorded yet ({snapshot_path()} appears when the portal or the "
                 "backoffice starts)")]
    loaded = snapshot.loaded_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"running version {snapshot.version[:12]} (loaded {loaded})"]
    try:
        running = snapshot_policies(snapshot, schema_fallback=schemas)
    except PolicyError as exc:
        return [*lines, f"  cannot compare: the running version's files no longer load ({exc})"]
    if running.version != snapshot.version:
        lines.append(f"  note: the recorded files hash to {running.version[:12]}, not {snapshot.version[:12]}; "
                     "they changed while the app started")
    if current.version == running.version:
        return [*lines, "  the files checked are the running version: nothing changed"]
    changes = diff(running, current)
    if not changes:
        return [*lines, f"  the files checked ({current.version[:12]}) differ in text only: no decision changed"]
    lines.append(f"  {len(changes)} decision(s) change when the apps load {current.version[:12]}:")
    return [*lines, *(f"  {change}" for change in changes)]


def cmd_check(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else get_settings().policies_dir
    try:
        policies = load_policies(directory)
    except PolicyError as exc:
        print(f"mutual: {exc}", file=sys.stderr)
        return 1
    print(f"policies in {directory}: valid (version {policies.version[:12]})")
    print()
    print("Who may read each personal field: each role under its most permissive purpose; (assigned) or "
          "(team): only on the people they own or their team serves; the customer on their own record")
    for line in format_matrix(matrix(policies), ordered_roles(policies)):
        print(line)
    print()
    for line in _running_version(policies, directory / SCHEMA_DIR):
        print(line)
    return 0


def _add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("check", help="validate the policy files, show who may read which personal "
                                "field, and what changed against the running version")
    check.add_argument("--dir", help="policy folder to check (default: MUTUAL_POLICIES_DIR or policies/)")
    check.set_defaults(func=cmd_check)


def register(subparsers: Commands) -> Commands:
    """Add the `policies` command group to the `mutual` parser."""
    return register_group(subparsers, "policies", "policy tools", _add_commands)


def main(argv: list[str] | None = None) -> int:
    return run_standalone("mutual policies", __doc__, _add_commands, argv)


if __name__ == "__main__":
    raise SystemExit(main())
