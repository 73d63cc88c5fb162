"""The plaintext floor: a minimal Litestar app rendering the same pages from a plain table,
without encryption, policy or audit. It exists only inside the bench, never in the product.

`uvicorn server.bench.floor:create_app --factory` with MUTUAL_BENCH_FLOOR=/path/floor.sqlite3, or
MUTUAL_BENCH_FLOOR=postgresql://… for the same table in the bench's PostgreSQL database (the floor of
the PostgreSQL backend: the ratio then compares privacy, not databases).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosqlite
from litestar import Litestar, Response, get

from server.settings import REPO_ROOT
from server.web.rendering import build_environment

LABELS = {"given_name": "Given name", "family_name": "Family name", "email": "Email", "phone": "Phone",
          "address": "Address", "birth_date": "Date of birth"}
PAGE = 25


@functools.cache
def _numbered(sql: str) -> str:
    """SQLite's `?` placeholders as asyncpg's `$1, $2, …`."""
    numbers = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


class _SQLite:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def connect(self) -> None:
        self.db = await aiosqlite.connect(self.path)
        self.db.row_factory = aiosqlite.Row

    async def fetch(self, sql: str, args: tuple) -> list[Any]:
        async with self.db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def close(self) -> None:
        await self.db.close()


class _Postgres:
    """An asyncpg pool of the size Piccolo's PostgresEngine uses by default (asyncpg's 10)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def connect(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.url)

    async def fetch(self, sql: str, args: tuple) -> list[Any]:
        return list(await self.pool.fetch(_numbered(sql), *args))

    async def close(self) -> None:
        await self.pool.close()


def create_app() -> Litestar:
    where = os.environ["MUTUAL_BENCH_FLOOR"]
    db = _Postgres(where) if where.startswith(("postgres://", "postgresql://")) else _SQLite(Path(where))
    env = build_environment(REPO_ROOT / "backoffice" / "templates")
    base = {"actor": SimpleNamespace(roles=frozenset({"admin"}), display="floor"), "face": "backoffice",
            "face_title": "Backoffice", "csrf_token": "floor", "labels": LABELS}

    async def connect(app: Litestar) -> None:
        await db.connect()

    async def close(app: Litestar) -> None:
        await db.close()

    def html(template: str, **context: Any) -> Response[str]:
        return Response(env.get_template(template).render(**base, **context), media_type="text/html")

    def record(row: Any, fields: tuple[str, ...]) -> SimpleNamespace:
        return SimpleNamespace(id=row["id"], values={f: row[f] for f in fields},
                               effects={f: "allow" for f in fields}, created_at=row["created_at"],
                               extra={"organisation": row["organisation"]})

    @get("/healthz")
    async def healthz() -> str:
        return "ok"

    @get("/people")
    async def people(after: str | None = None) -> Response[str]:
        sql = "SELECT id, given_name, family_name, email, organisation, created_at FROM floor_person"
        args: tuple = ()
        if after:
            at, rid = after.split("|", 1)
            sql += " WHERE created_at < ? OR (created_at = ? AND id < ?)"
            args = (at, at, rid)
        rows = await db.fetch(sql + f" ORDER BY created_at DESC, id DESC LIMIT {PAGE + 1}", args)
        items = [record(r, ("given_name", "family_name", "email")) for r in rows[:PAGE]]
        cursor = f"{rows[PAGE - 1]['created_at']}|{rows[PAGE - 1]['id']}" if len(rows) > PAGE else None
        return html("backoffice/people.html", page=SimpleNamespace(items=items, next_cursor=cursor))

    @get("/people/{person_id:str}")
    async def detail(person_id: str) -> Response[str]:
        row = (await db.fetch("SELECT * FROM floor_person WHERE id = ?", (person_id,)))[0]
        person = record(row, ("given_name", "family_name", "email", "phone", "birth_date"))
        return html("backoffice/person.html", person=person, notes=[], notes_denied=None, reasons={})

    return Litestar([healthz, people, detail], on_startup=[connect], on_shutdown=[close], openapi_config=None)
