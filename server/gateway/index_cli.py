"""`mutual index status` and `mutual index rebuild`: search-index widths after `MUTUAL_EXPECTED_PEOPLE` changes."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from server.gateway.indexing import SEARCH_FIELDS, bits, rebuild_index, stale_widths

REBUILD_HINT = "run `mutual index rebuild` to re-plan them"


def _status() -> dict[str, int]:
    from server.kernel import require_kernel

    require_kernel()
    return asyncio.run(stale_widths())


def cmd_status(args: argparse.Namespace) -> int:
    """Planned width of each search index, and how many stored values still have another width."""
    stale = _status()
    print(f"{'search index':<14} {'planned bits':>12} {'values of another width':>24}")
    for field in SEARCH_FIELDS:
        print(f"{field:<14} {bits(field):>12} {stale[field]:>24}")
    if any(stale.values()):
        print(f"mutual: some values keep the width of an earlier MUTUAL_EXPECTED_PEOPLE (still found); {REBUILD_HINT}")
    return 0


async def rebuild_widths(fields: list[str], batch: int = 500) -> dict[str, int]:
    """Re-index every person whose values are not at the planned widths, with a progress bar; audited."""
    from server.actor import system_actor
    from server.audit.chain import Entry, append
    from server.bench.progress import Progress
    from server.kernel import get_kernel

    stale = await stale_widths()
    done: dict[str, int] = {}
    for field in fields:
        bar = Progress(f"index {field}", stale[field])
        done[field] = await rebuild_index(field, batch=batch, progress=bar.advance)
        bar.close()
    await append(system_actor("keys"), Entry(action="rebuild_index", entity="index:" + ",".join(fields),
                                             purpose="compliance_audit",
                                             fields={f: str(bits(f)) for f in fields}),
                 get_kernel().policies.version)
    return done


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Recompute search indexes at the widths planned for the current `MUTUAL_EXPECTED_PEOPLE`."""
    from server.kernel import require_kernel

    require_kernel()
    fields = [args.field] if args.field else list(SEARCH_FIELDS)
    done = asyncio.run(rebuild_widths(fields, args.batch))
    for field in fields:
        print(f"mutual: {field} index at {bits(field)} bits; re-indexed {done[field]} people")
    return 0


def register(subparsers: Any) -> None:
    """Add `index status` and `index rebuild` to the `mutual` command's subparsers."""
    index = subparsers.add_parser("index", help="search-index widths (planned from MUTUAL_EXPECTED_PEOPLE)")
    commands = index.add_subparsers(dest="index_command", required=True)
    commands.add_parser("status", help="planned widths and values of another width").set_defaults(func=cmd_status)
    rebuild = commands.add_parser(
        "rebuild", help="re-index people at the planned widths, in batches while the apps serve (resumable)",
        description="Run after changing MUTUAL_EXPECTED_PEOPLE: every search index value is recomputed at the "
                    "width planned for the new count. Search keeps finding everyone meanwhile.")
    rebuild.add_argument("--field", choices=list(SEARCH_FIELDS), help="one index only (default: all)")
    rebuild.add_argument("--batch", type=int, default=500)
    rebuild.set_defaults(func=cmd_rebuild)
