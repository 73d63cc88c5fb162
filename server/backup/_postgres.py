"""PostgreSQL: pg_dump of one exported snapshot, pg_restore in one transaction, VACUUM of erased rows."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.backup._files import BackupError
from server.backup._sqlite import REQUIRED_TABLES
from server.db import engine, raw

PG_MAGIC = b"PGDMP"
# Tables whose dead rows still hold an erased person's ciphertext or wrapped data key.
ERASURE_TABLES = ("crm_person", "crm_note", "identity_customer_account", "identity_session")


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} was not found on PATH; install the PostgreSQL client tools matching the "
                          f"server's major version (Debian/Ubuntu: apt install postgresql-client-15)")
    return found


def _pg_connection() -> tuple[list[str], dict[str, str]]:
    """libpq arguments from the engine's own settings; the password goes in the environment,
    never on the command line where other local users could read it."""
    config = getattr(engine(), "config", {})
    args = [f"--host={config.get('host') or '127.0.0.1'}", f"--port={config.get('port') or 5432}",
            f"--username={config.get('user') or 'postgres'}", "--no-password"]
    env = dict(os.environ)
    if config.get("password"):
        env["PGPASSWORD"] = str(config["password"])
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return args, env


def pg_database() -> str:
    return str(getattr(engine(), "config", {}).get("database") or "mutual")


async def _run_tool(argv: Sequence[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()[-2000:] or "no message"
        raise BackupError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): {message}")
    return out.decode(errors="replace")


async def pg_backup(target: Path) -> dict[str, Any]:
    """pg_dump reads the snapshot this transaction exported, so the audit head in the sidecar is
    exactly the one inside the dump."""
    tool = pg_tool("pg_dump")
    args, env = _pg_connection()
    async with engine().transaction():
        await raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = (await raw("SELECT pg_export_snapshot() AS snapshot"))[0]["snapshot"]
        heads = await raw("SELECT seq, hash FROM audit_head WHERE name = 'main'")
        await _run_tool([tool, "--format=custom", f"--snapshot={snapshot}", f"--file={target}", *args,
                         f"--dbname={pg_database()}"], env)
    return {"seq": int(heads[0]["seq"]), "hash": heads[0]["hash"]} if heads else {"seq": 0, "hash": None}


async def _pg_other_sessions() -> str:
    """Names of other client sessions on this database ('' when none), allowing a just-closed
    connection of this process a moment to leave pg_stat_activity."""
    sql = ("SELECT coalesce(string_agg(DISTINCT coalesce(nullif(application_name, ''), 'unnamed client'), ', '), "
           "'') AS apps FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
           "AND backend_type = 'client backend'")
    apps = ""
    for _ in range(15):
        apps = (await raw(sql))[0]["apps"]
        if not apps:
            return ""
        await asyncio.sleep(0.2)
    return apps


async def pg_restore(backup_file: Path) -> None:
    tool = pg_tool("pg_restore")
    args, env = _pg_connection()
    listing = await _run_tool([tool, "--list", str(backup_file)], env)
    missing = [t for t in REQUIRED_TABLES if not any(f" TABLE public {t} " in line or
                                                     line.rstrip().endswith(f" TABLE public {t}")
                                                     for line in listing.splitlines())]
    if missing:
        raise BackupError(f"{backup_file} is not a Mutual database dump (no {', '.join(missing)}); "
                          "nothing was changed")
    others = await _pg_other_sessions()
    if others:
        raise BackupError(f"the database {pg_database()} is in use by: {others}; stop the portal and the "
                          "backoffice (and other clients) before restoring; nothing was changed")
    # One transaction: a failure part-way leaves the live database as it was.
    await _run_tool([tool, "--clean", "--if-exists", "--no-owner", "--single-transaction", *args,
                     f"--dbname={pg_database()}", str(backup_file)], env)


async def pg_vacuum() -> None:
    """Free the dead rows the replay left: VACUUM FULL rewrites the (small) key table, so no
    wrapped data key of an erased person stays in a data file; the rest is vacuumed in place."""
    await raw("VACUUM FULL vault_subject_key")
    for table in ERASURE_TABLES:
        await raw(f"VACUUM {table}")
