"""The `mutual backup` and `mutual restore` commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import server  # noqa: F401 - sets PICCOLO_CONF before Piccolo is imported
from server.kernel import require_kernel
from server.settings import get_settings

RESTORE_HELP = "replace the database with a backup and replay the erasure ledger (stop the apps first)"
RESTORE_DESCRIPTION = """Replace the whole database with FILE, then erase again everyone in the erasure
ledger, so that people erased after the backup was taken stay erased.

Stop the portal and the backoffice first: the restore refuses to run while they
have the database open. Start them again afterwards. Everything written since the
backup was taken is lost, except erasures, which the ledger replays. Without the
ledger file the restore refuses, unless --without-ledger is given."""


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def cmd_backup(args: argparse.Namespace) -> int:
    from server.backup import BackupError, backup, read_sidecar

    settings = get_settings()
    try:
        path = asyncio.run(backup(args.to))
    except BackupError as exc:
        print(f"mutual: backup failed: {exc}", file=sys.stderr)
        return 1
    info = read_sidecar(path) or {}
    print(f"mutual: backup written to {path} ({_size(path.stat().st_size)}, "
          f"audit chain at event {info.get('audit_head', {}).get('seq', '?')})")
    print(f"Back up separately, and keep apart from the database backups: the key file {settings.key_file}, "
          f"the subject-key store {settings.subject_key_store} and the erasure ledger {settings.erasure_ledger}, "
          "again after every erasure. Without the key file no backup can be read.")
    return 0


def _confirm(file: Path) -> bool:
    from server.backup import BackupError, read_sidecar

    settings = get_settings()
    try:
        info = read_sidecar(file) or {}
    except BackupError:
        info = {}
    target = settings.database_url.split("@")[-1] if settings.is_postgres else str(settings.sqlite_path)
    taken = f" taken {info['created']}" if info.get("created") else ""
    print(f"This replaces the whole database {target} with the backup {file}{taken}.")
    print("Everything written since then is lost; erasures since then are applied again from the ledger.")
    print("The portal and the backoffice must be stopped.")
    return input("Type yes to restore: ").strip().lower() == "yes"


async def _restore_and_verify(file: Path, without_ledger: bool) -> tuple[Any, Any]:
    from server.audit.chain import verify_database
    from server.backup import restore
    from server.bench.progress import Progress

    result = await restore(file, progress=Progress, without_ledger=without_ledger)
    return result, await verify_database()


def cmd_restore(args: argparse.Namespace) -> int:
    from server.backup import BackupError

    file: Path = args.file
    if not file.is_file():
        print(f"mutual: backup file {file} does not exist; nothing was changed", file=sys.stderr)
        return 1
    if not args.yes:
        if not sys.stdin.isatty():
            print("mutual: restore replaces the whole database and asks for confirmation, but standard input "
                  "is not a terminal; stop the apps and run `mutual restore FILE --yes`", file=sys.stderr)
            return 2
        if not _confirm(file):
            print("mutual: restore cancelled; nothing was changed")
            return 1
    require_kernel("restore")
    try:
        result, chain = asyncio.run(_restore_and_verify(file, args.without_ledger))
    except BackupError as exc:
        print(f"mutual: restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"mutual: database restored from {file}")
    print(f"erasure ledger replayed: {result.replayed} erased people removed again, "
          f"{result.already_absent} already absent from the backup")
    print(f"subject-key store: {result.rekeyed} data keys taken over; {result.unreadable} people whose data key "
          "only a destroyed key-encryption key opened (erased) removed")
    if not result.ledger_found:
        print(f"warning: restored without an erasure ledger ({get_settings().erasure_ledger}). If anyone was "
              "erased after this backup was taken, restore the ledger from the key backup and run the restore "
              "again.", file=sys.stderr)
    if not chain.ok:
        print(f"audit chain BROKEN at event {chain.first_bad_seq}: {chain.problem}", file=sys.stderr)
        return 1
    print(f"audit chain intact: {chain.checked} events verified. Start the portal and the backoffice again.")
    return 0


def register(subparsers: Any) -> None:
    """Add `backup` and `restore` to the `mutual` command's subparsers."""
    backup = subparsers.add_parser(
        "backup", help="copy the database into a backup folder while the apps keep running",
        description="Copy the database (SQLite: online backup; PostgreSQL: pg_dump) into DIR, with a small "
                    "JSON file beside it. The key file and the erasure ledger are never included: back them "
                    "up separately.")
    backup.add_argument("--to", metavar="DIR", type=Path, help="backup folder (default: <var dir>/backups)")
    backup.set_defaults(func=cmd_backup)
    restore = subparsers.add_parser("restore", help=RESTORE_HELP, description=RESTORE_DESCRIPTION,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    restore.add_argument("file", metavar="FILE", type=Path, help="a backup written by `mutual backup`")
    restore.add_argument("--yes", action="store_true",
                         help="do not ask for confirmation (required when standard input is not a terminal)")
    restore.add_argument("--without-ledger", action="store_true",
                         help="restore although there is no erasure ledger file (only if nobody was ever erased)")
    restore.set_defaults(func=cmd_restore)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mutual", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
