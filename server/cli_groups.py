"""Shared plumbing of the `mutual` command groups (keys, policies, backup): register and run standalone."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Commands = argparse._SubParsersAction  # the subcommands of one group
AddCommands = Callable[[Commands], None]


def register_group(subparsers: Commands, name: str, help_text: str, add_commands: AddCommands) -> Commands:
    """Add `mutual NAME ...` with its subcommands; returns them, for commands of other areas."""
    group = subparsers.add_parser(name, help=help_text)
    commands = group.add_subparsers(dest=f"{name}_command", required=True)
    add_commands(commands)
    return commands


def run_standalone(prog: str, description: str | None, add_commands: AddCommands,
                   argv: list[str] | None = None) -> int:
    """`python -m <module> ...`: the group's subcommands without the rest of `mutual`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
