"""Build (once, then cached) the bench dataset through the real services.

Run in its own process with MUTUAL_DATABASE_URL and MUTUAL_KEY_FILE pointing at the bench
store: `python -m server.bench.dataset --people N --events M --meta PATH`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import time
import uuid
from pathlib import Path

import server  # noqa: F401 - PICCOLO_CONF
from server import gateway
from server.actor import Actor, system_actor
from server.audit.chain import Entry, append_many
from server.bench.progress import Progress
from server.crm import organisations
from server.db import raw
from server.identity.service import create_customer_account, create_staff
from server.kernel import get_kernel
from server.setup import migrate

BATCH = 1000
STAFF_LOGIN = ("bench-admin", "bench-admin-password")
CUSTOMER_PASSWORD = "bench-customer-password"
SAMPLE = 500


def bench_email(i: int) -> str:
    """Synthetic and derivable, so the cache never needs to hold an address in clear text."""
    return f"person{i}@bench.example"


def person_values(fake_de: object, fake_en: object, i: int) -> dict[str, str]:
    fake = fake_de if i % 2 else fake_en
    return {
        "given_name": fake.first_name(),  # type: ignore[attr-defined]
        "family_name": fake.last_name(),  # type: ignore[attr-defined]
        "email": bench_email(i),
        "phone": f"+49 30 {1000000 + i}",
        "birth_date": f"{1940 + i % 60}-{1 + i % 12:02d}-{1 + i % 28:02d}",
    }


async def build(people: int, events: int, floor_rows: list[tuple] | None) -> dict:
    from faker import Faker

    await migrate()
    fake_de, fake_en = Faker("de_DE"), Faker("en_GB")
    Faker.seed(4321)
    actor = system_actor("bench-import")
    await create_staff(STAFF_LOGIN[0], STAFF_LOGIN[1], ["admin"])
    orgs = [await organisations.create(f"Organisation {n}") for n in range(max(people // 50, 1))]
    ids: list[uuid.UUID] = []
    bar = Progress("people", people)
    started = time.perf_counter()
    for start in range(0, people, BATCH):
        rows = [person_values(fake_de, fake_en, i) for i in range(start, min(start + BATCH, people))]
        org_ids = [orgs[(start + k) % len(orgs)] for k in range(len(rows))]
        batch_ids = await gateway.import_people(actor, purpose="customer_service", rows=rows,
                                                organisation_ids=org_ids)
        ids.extend(batch_ids)
        if floor_rows is not None:
            floor_rows.extend((str(pid), r["given_name"], r["family_name"], r["email"], r["phone"],
                               r["birth_date"], f"Organisation {(start + k) % len(orgs)}")
                              for k, (pid, r) in enumerate(zip(batch_ids, rows)))
        bar.advance(len(rows))
    bar.close()
    import_rate = people / (time.perf_counter() - started)

    notes = max(people // 50, 1)
    bar = Progress("notes", notes)
    for i in range(notes):
        await gateway.add_note(actor, purpose="customer_service", person_id=ids[i * 50 % len(ids)],
                               body="Called about the renewal; prefers email.")
        bar.advance()
    bar.close()

    customer_index = 0
    await create_customer_account(ids[customer_index], bench_email(customer_index), CUSTOMER_PASSWORD)

    pseudonyms = [r["pseudonym"] for r in await raw("SELECT pseudonym FROM crm_person")]
    staff = Actor(kind="staff", id=str(uuid.uuid4()), face="backoffice", roles=frozenset({"admin"}),
                  display="bench")
    version = get_kernel().policies.version
    rng = random.Random(7)
    bar = Progress("audit events", events)
    fields = {"email": "allow by admin-read-write-all", "family_name": "allow by admin-read-write-all",
              "given_name": "allow by admin-read-write-all"}
    for start in range(0, events, 5000):
        n = min(5000, events - start)
        batch = [(staff, Entry(action="read", entity="crm_person", purpose="customer_service",
                               subjects=(str(rng.choice(pseudonyms)),), fields=fields)) for _ in range(n)]
        await append_many(batch, version)
        bar.advance(n)
    bar.close()
    # A bulk load leaves the planner without statistics (autovacuum would gather them minutes later on
    # PostgreSQL; SQLite never does): gather them now, as a real store has them after its first hours.
    await raw("ANALYZE")
    sample = sorted(rng.sample(range(people), min(SAMPLE, people)))
    return {
        "people": people, "events": events, "built": dt.datetime.now(dt.UTC).isoformat(),
        "import_people_per_s": import_rate,
        "sample": [{"index": i, "id": str(ids[i])} for i in sample],
        "staff": list(STAFF_LOGIN),
        "customer": [bench_email(customer_index), CUSTOMER_PASSWORD],
    }


def write_floor(path: Path, rows: list[tuple]) -> None:
    """The plaintext floor: the same rows, unencrypted and unaudited, in a plain SQLite table."""
    import sqlite3

    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE floor_person (id TEXT PRIMARY KEY, given_name TEXT, family_name TEXT, "
                     "email TEXT, phone TEXT, birth_date TEXT, organisation TEXT, created_at TEXT)")
        now = dt.datetime.now(dt.UTC)
        conn.executemany("INSERT INTO floor_person VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [(*r, (now + dt.timedelta(microseconds=i)).isoformat()) for i, r in enumerate(rows)])
        conn.execute("CREATE INDEX floor_person_created ON floor_person (created_at, id)")
        conn.execute("ANALYZE")


FLOOR_COLUMNS = ("id", "given_name", "family_name", "email", "phone", "birth_date", "organisation", "created_at")


async def write_pg_floor(url: str, rows: list[tuple]) -> None:
    """The same floor table in the bench's PostgreSQL database: the floor of the PostgreSQL backend."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS floor_person")
        await conn.execute("CREATE TABLE floor_person (id TEXT PRIMARY KEY, given_name TEXT, family_name TEXT, "
                           "email TEXT, phone TEXT, birth_date TEXT, organisation TEXT, created_at TEXT)")
        now = dt.datetime.now(dt.UTC)
        await conn.copy_records_to_table(
            "floor_person", columns=FLOOR_COLUMNS,
            records=[(*r, (now + dt.timedelta(microseconds=i)).isoformat()) for i, r in enumerate(rows)])
        await conn.execute("CREATE INDEX floor_person_created ON floor_person (created_at, id)")
        await conn.execute("ANALYZE floor_person")
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--meta", type=Path, required=True)
    parser.add_argument("--floor", type=Path, required=True)
    args = parser.parse_args()
    floor_rows: list[tuple] = []
    meta = asyncio.run(build(args.people, args.events, floor_rows))
    write_floor(args.floor, floor_rows)
    url = os.environ.get("MUTUAL_DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        asyncio.run(write_pg_floor(url, floor_rows))
    args.meta.write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
