"""Print the PostgreSQL URL the test suite should use, or nothing when none answers."""

from __future__ import annotations

import asyncio
import os
import sys

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


async def _answers(url: str) -> bool:
    import asyncpg

    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), timeout=3)
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
    await conn.close()
    return True


def main() -> int:
    url = os.environ.get("MUTUAL_TEST_POSTGRES_URL", DEFAULT)
    if asyncio.run(_answers(url)):
        print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
