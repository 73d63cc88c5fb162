"""Verifying a range of the live chain by storage id, here or in a worker process.

A long chain is split in two at an id: this process verifies the first part while a worker process
(`python -m server.audit.verify_segment`, spec as JSON on stdin, summary as JSON on stdout) verifies
the rest, starting from the state its first event claims. The parent then stitches: the worker's
first event must be the one the parent expects next (seq, link, format). On PostgreSQL the worker
reads the parent's exported snapshot; on SQLite it reads committed rows up to the MAX(id) of the
parent's snapshot. Whenever the worker found a problem, failed or does not stitch, the parent goes
on verifying the rest itself, in its own snapshot: verdict, `checked` and `first_bad_seq` are
exactly those of one sequential pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import subprocess
import sys
import threading
from typing import Any

from server.audit.format import EVENT_FORMATS
from server.audit.verifier import COLUMNS, ChainVerifier
from server.audit.verify_fast import FAST_COLUMNS, PG_TEXT, SQLITE_TEXT, feed_fast

PARALLEL_MIN_EVENTS = 200_000
"""Chains spanning fewer storage ids are verified in one process (a worker costs ~0.3 s to start)."""


def _bounds(lo: int | None, hi: int | None, marks: tuple[str, str]) -> tuple[str, tuple[int, ...]]:
    """lo < id <= hi; None: unbounded on that side (an id below 1 is as much part of the chain)."""
    if lo is None:
        return (f"WHERE id <= {marks[0]}", (hi,)) if hi is not None else ("", ())
    if hi is None:
        return f"WHERE id > {marks[0]}", (lo,)
    return f"WHERE id > {marks[0]} AND id <= {marks[1]}", (lo, hi)


def feed_sqlite(conn: sqlite3.Connection, verifier: ChainVerifier, batch: int, lo: int | None, hi: int | None) -> None:
    """Feed the rows lo < id <= hi (None: unbounded), fast, and any doubtful batch the slow way."""
    where, params = _bounds(lo, hi, ("?", "?"))
    cursor = conn.execute(f"SELECT {FAST_COLUMNS}, {SQLITE_TEXT} FROM audit_event {where} ORDER BY id", params)
    while rows := cursor.fetchmany(batch):
        if not feed_fast(verifier, rows) and not verifier.feed_tuples(conn.execute(
                f"SELECT {COLUMNS} FROM audit_event WHERE id BETWEEN ? AND ? ORDER BY id",
                (rows[0][0], rows[-1][0])).fetchall()):
            return


async def feed_pg(conn: Any, verifier: ChainVerifier, batch: int, lo: int | None, hi: int | None) -> None:
    """PostgreSQL (an asyncpg connection in a transaction): as feed_sqlite."""
    where, params = _bounds(lo, hi, ("$1", "$2"))
    cursor = await conn.cursor(f"SELECT {FAST_COLUMNS}, {PG_TEXT} FROM audit_event {where} ORDER BY id", *params)
    while rows := await cursor.fetch(batch):
        if not feed_fast(verifier, rows) and not verifier.feed_tuples(await conn.fetch(
                f"SELECT {COLUMNS} FROM audit_event WHERE id BETWEEN $1 AND $2 ORDER BY id",
                rows[0][0], rows[-1][0])):
            return


def split_point(low: int | None, high: int | None) -> int | None:
    """The id after which a worker takes over, or None when the chain is too short to share."""
    if low is None or high is None or high - low < PARALLEL_MIN_EVENTS:
        return None
    return low + (high - low) // 2


class Worker:
    """A worker process verifying lo < id <= hi; `result()` waits for its summary (None on any failure)."""

    def __init__(self, spec: dict[str, Any], verifier: ChainVerifier) -> None:
        spec = {**spec, "log_id": verifier.log_id,
                "marks": [[seq, digest, problem] for seq, (digest, problem) in verifier.marks.items()],
                "witnessed": [[seq, digest, name] for seq, (digest, name) in verifier.witnessed.items()]}
        self._output: bytes | None = None
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "server.audit.verify_segment"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            self._proc = None
            return
        self._thread = threading.Thread(target=self._talk, args=(json.dumps(spec).encode(),), daemon=True)
        self._thread.start()

    def _talk(self, spec: bytes) -> None:
        assert self._proc is not None
        with contextlib.suppress(OSError, ValueError):
            output, _ = self._proc.communicate(spec)
            if self._proc.returncode == 0:
                self._output = output

    def stop(self) -> None:
        """The parent already found a problem: the worker's verdict no longer matters."""
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._thread.join()

    def result(self) -> dict[str, Any] | None:
        if self._proc is None:
            return None
        self._thread.join()
        try:
            summary = json.loads(self._output or b"null")
        except ValueError:
            return None
        return summary if isinstance(summary, dict) else None


def stitch(verifier: ChainVerifier, summary: dict[str, Any] | None) -> bool:
    """Move the verifier past the worker's range when the worker found it intact and it continues
    exactly where the verifier stands; False (verifier unchanged) otherwise."""
    if verifier.failure is not None or not summary or not summary.get("ok") or summary.get("first_seq") is None:
        return False
    if (summary["first_seq"] != verifier.expected_seq or verifier.expected_seq == 1
            or summary["first_prev"] != verifier.expected_prev or not isinstance(summary["first_version"], int)
            or summary["first_version"] < verifier.version):
        return False  # the sequential pass decides (it also handles a chain that starts after a pruned prefix)
    verifier.version = summary["version"]
    verifier._advance(summary["last_hash"], summary["last_seq"] + 1)
    return True


def _start(verifier: ChainVerifier, first: Any) -> None:
    """Continue from the first event of the range, as if everything before it had verified."""
    verifier.expected_seq = verifier.start = int(first[0])
    verifier.expected_prev = first[1]
    verifier.version = first[2] if first[2] in EVENT_FORMATS else 1


def _summary(verifier: ChainVerifier, first: Any) -> dict[str, Any]:
    if first is None:
        return {"ok": True, "first_seq": None}
    return {"ok": verifier.failure is None, "first_seq": int(first[0]), "first_prev": first[1],
            "first_version": first[2], "last_seq": verifier.expected_seq - 1, "last_hash": verifier.expected_prev,
            "version": verifier.version}


_FIRST = "SELECT seq, prev_hash, format_version FROM audit_event WHERE id > {} AND id <= {} ORDER BY id LIMIT 1"


def _run_sqlite(spec: dict[str, Any], verifier: ChainVerifier) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(f"file:{spec['path']}?mode=ro", uri=True)) as conn:
        conn.execute("BEGIN")
        first = conn.execute(_FIRST.format("?", "?"), (spec["lo"], spec["hi"])).fetchone()
        if first is not None:
            _start(verifier, first)
            feed_sqlite(conn, verifier, spec["batch"], spec["lo"], spec["hi"])
        return _summary(verifier, first)


async def _run_pg(spec: dict[str, Any], verifier: ChainVerifier) -> dict[str, Any]:
    import asyncpg

    snapshot = str(spec["snapshot"])
    if not re.fullmatch(r"[0-9A-Fa-f-]+", snapshot):
        raise SystemExit("verify worker: not a snapshot id")
    conn = await asyncpg.connect(**spec["connect"])
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            first = await conn.fetchrow(_FIRST.format("$1", "$2"), spec["lo"], spec["hi"])
            if first is not None:
                _start(verifier, first)
                await feed_pg(conn, verifier, spec["batch"], spec["lo"], spec["hi"])
            return _summary(verifier, first)
    finally:
        await conn.close()


def main() -> int:
    spec = json.loads(sys.stdin.buffer.read())
    verifier = ChainVerifier({int(s): (d, p) for s, d, p in spec["marks"]}, spec["log_id"],
                             {int(s): (d, n) for s, d, n in spec["witnessed"]})
    if spec["kind"] == "sqlite":
        summary = _run_sqlite(spec, verifier)
    else:
        summary = asyncio.run(_run_pg(spec, verifier))
    sys.stdout.write(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
