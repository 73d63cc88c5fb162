"""Print the PostgreSQL URL the test suite should use, or nothing when none answers."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.setup import DEFAULT_POSTGRES_URL, postgres_answers  # noqa: E402


def main() -> int:
    url = os.environ.get("MUTUAL_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    if asyncio.run(postgres_answers(url)):
        print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
