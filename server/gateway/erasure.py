"""After an erasure commits: end the crypto-period and leave no dead copy of a wrapped key in the table."""

from __future__ import annotations

import logging

from server.db import engine, flush_deleted_pages, is_sqlite, raw
from server.settings import get_settings
from server.vault.keys import KeyError_
from server.vault.periods import PeriodResult, close_period

log = logging.getLogger(__name__)


async def vacuum_subject_keys() -> None:
    """PostgreSQL keeps a deleted row's bytes in the table file until VACUUM; VACUUM FULL rewrites the
    (small) key table into a new file, so no wrapped data key of an erased person stays in a data file.
    SQLite overwrites deleted rows (secure_delete) and the WAL is folded in and truncated."""
    if is_sqlite():
        await flush_deleted_pages()
    else:
        await raw("VACUUM FULL vault_subject_key")


async def finish_erasure() -> PeriodResult | None:
    """Close the crypto-period (None when the keys cannot be rewritten, e.g. MUTUAL_KEYS inline: the
    erasure stands in the live database and `mutual keys close-period` finishes it), then vacuum."""
    if engine().current_transaction.get() is not None:
        raise RuntimeError("finish_erasure() runs after the erasure's transaction has committed")
    settings = get_settings()
    result: PeriodResult | None
    try:
        result = await close_period(settings.key_file, settings.subject_key_store)
    except KeyError_ as exc:
        log.warning("erasure committed, but its crypto-period is not closed, so older backups still open it: "
                    "%s; run `mutual keys close-period`", exc)
        result = None
    await vacuum_subject_keys()
    return result
