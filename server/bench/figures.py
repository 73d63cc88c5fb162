"""CLI figures for the bench, in the bench store's environment: chain verification speed and
import speed into a scratch store of the same backend. Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import time

import server  # noqa: F401 - PICCOLO_CONF
from server.audit.chain import verify_database

IMPORT_SAMPLE = 5_000


async def _verify() -> tuple[float, int]:
    started = time.perf_counter()
    result = await verify_database()
    if not result.ok:
        raise SystemExit(f"bench: the audit chain does not verify: {result.problem}")
    return result.checked / (time.perf_counter() - started), result.checked


async def _import_rate() -> float:
    """Time an import of IMPORT_SAMPLE people inside a transaction that is then rolled back."""
    from server import gateway
    from server.actor import system_actor
    from server.bench.dataset import person_values
    from server.db import write_transaction

    from faker import Faker

    fake_de, fake_en = Faker("de_DE"), Faker("en_GB")
    rows = [person_values(fake_de, fake_en, 10_000_000 + i) for i in range(IMPORT_SAMPLE)]

    class Rollback(Exception):
        pass

    started = time.perf_counter()
    try:
        async with write_transaction():
            for start in range(0, IMPORT_SAMPLE, 1000):
                await gateway.import_people(system_actor("bench"), purpose="customer_service",
                                            rows=rows[start:start + 1000])
            elapsed = time.perf_counter() - started
            raise Rollback
    except Rollback:
        pass
    return IMPORT_SAMPLE / elapsed


def main() -> int:
    verify_rate, verified = asyncio.run(_verify())
    import_rate = asyncio.run(_import_rate())
    print(json.dumps({"verify_per_s": verify_rate, "verified": verified, "import_per_s": import_rate}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
