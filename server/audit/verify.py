"""Verifying the live chain from the database: one snapshot, checkpoints, the head and the witnesses
(the checks themselves are in server.audit.verifier)."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from typing import Any

import anyio

from server.audit.pending import pending_checked
from server.audit.signing import checkpoint_marks, checkpoint_problem, trust
from server.audit.verifier import ChainVerifier, VerifyResult, verify_rows
from server.audit.verify_segment import Worker, feed_pg, feed_sqlite, split_point, stitch
from server.audit.witness import WitnessError, configured
from server.db import engine, is_sqlite

__all__ = ["ChainVerifier", "VerifyResult", "verify_database", "verify_rows"]

_CHECKPOINT_COLUMNS = "seq, hash, at, key_id, public_key, signature, format_version, log_id"
_HEAD = "SELECT seq, hash, log_id FROM audit_head WHERE name = 'main'"
_ID_RANGE = "SELECT min(id), max(id) FROM audit_event"


def _witnessed(trusted: Any, log_id: str) -> tuple[dict[int, tuple[str, str]], str]:
    """The newest head of every configured witness, each checked like a checkpoint; or a problem."""
    found: dict[int, tuple[str, str]] = {}
    for witness in configured():
        try:
            entry = witness.newest()
        except (WitnessError, OSError) as exc:
            return {}, f"witness {witness.name}: {exc}"
        if entry is None:
            continue
        problem = checkpoint_problem(entry, trusted, log_id)
        if problem:
            return {}, f"the newest head in witness {witness.name} (event {entry.get('seq')}): {problem}"
        seq = int(entry["seq"])
        if seq in found and found[seq][0] != entry["hash"]:
            return {}, f"witnesses disagree about event {seq}: {found[seq][1]} and {witness.name}"
        found[seq] = (str(entry["hash"]), witness.name)
    return found, ""


def _anchoring(result: VerifyResult, unanchored: str) -> VerifyResult:
    if result.ok and not unanchored and result.checked and not result.checkpoints and not result.witnessed:
        unanchored = "no signed checkpoint covers the chain yet (run `mutual audit checkpoint`)"
    return dataclasses.replace(result, unanchored=unanchored) if result.ok else result


@pending_checked
async def verify_database(batch: int = 20_000) -> VerifyResult:
    """Verify the live chain in insertion order (the storage id, so moved rows show up), in
    batches from one consistent snapshot: memory stays bounded at a million events and more.
    A long chain is shared with a worker process (server.audit.verify_segment).
    The newest head of each configured witness must be reached and matched."""
    trusted, unanchored = trust()
    if is_sqlite():
        return await anyio.to_thread.run_sync(_verify_sqlite_file, batch, trusted, unanchored)
    async with engine().transaction() as txn:
        conn = txn.connection
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        head = await conn.fetchrow(_HEAD)
        log_id = head["log_id"] if head else ""
        witnessed, problem = await anyio.to_thread.run_sync(_witnessed, trusted, log_id)
        if problem:
            return VerifyResult(False, 0, problem)
        stored = [dict(r) for r in await conn.fetch(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq")]
        verifier = ChainVerifier(checkpoint_marks(stored, trusted, log_id), log_id, witnessed)
        low, high = await conn.fetchrow(_ID_RANGE)
        split = split_point(low, high)
        if split is None:
            await feed_pg(conn, verifier, batch, None, None)
        else:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            worker = Worker({"kind": "postgres", "connect": _pg_connect(), "snapshot": snapshot, "lo": split,
                             "hi": high, "batch": batch}, verifier)
            await feed_pg(conn, verifier, batch, None, split)
            if verifier.failure is not None:
                await anyio.to_thread.run_sync(worker.stop)
            elif not stitch(verifier, await anyio.to_thread.run_sync(worker.result)):
                await feed_pg(conn, verifier, batch, split, None)
    return _anchoring(verifier.finish(head), unanchored)


def _pg_connect() -> dict[str, Any]:
    config = engine().config  # type: ignore[attr-defined]
    return {key: config[key] for key in ("host", "port", "user", "password", "database") if key in config}


def _verify_sqlite_file(batch: int, trusted: Any, unanchored: str) -> VerifyResult:
    """SQLite: one read transaction on a plain connection, values exactly as stored."""
    path = engine().path  # type: ignore[attr-defined]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        conn.execute("BEGIN")
        row = conn.execute(_HEAD).fetchone()
        head = {"seq": row[0], "hash": row[1], "log_id": row[2]} if row else None
        log_id = row[2] if row else ""
        witnessed, problem = _witnessed(trusted, log_id)
        if problem:
            return VerifyResult(False, 0, problem)
        names = _CHECKPOINT_COLUMNS.split(", ")
        stored = [dict(zip(names, r)) for r in
                  conn.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY seq")]
        verifier = ChainVerifier(checkpoint_marks(stored, trusted, log_id), log_id, witnessed)
        low, high = conn.execute(_ID_RANGE).fetchone()
        split = split_point(low, high)
        if split is None:
            feed_sqlite(conn, verifier, batch, None, None)
        else:
            worker = Worker({"kind": "sqlite", "path": path, "lo": split, "hi": high, "batch": batch}, verifier)
            feed_sqlite(conn, verifier, batch, None, split)
            if verifier.failure is not None:
                worker.stop()
            elif not stitch(verifier, worker.result()):
                feed_sqlite(conn, verifier, batch, split, None)
    return _anchoring(verifier.finish(head), unanchored)
