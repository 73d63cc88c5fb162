"""Anchoring the live chain: sign the head on a timer and publish signed heads to the witnesses.

A periodic task in each app process's lifespan (a timer, not a queue): every MUTUAL_AUDIT_SIGN_SECONDS
it compares the head with the newest checkpoint (two one-row reads), signs the head when events came
since, and hands the newest checkpoint to each witness that does not hold it yet. Requests do no part
of this work.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio

from server.audit.checkpoints import checkpoint_now, latest_checkpoint
from server.audit.signing import load_signing_key, pinned_keys
from server.audit.witness import WitnessError, configured
from server.db import raw
from server.settings import get_settings
from server.tasks import ProcessTask

log = logging.getLogger("mutual.audit")
_published: dict[str, int] = {}
"""Per witness name, the seq this process last saw it hold: a witness is read once, not every tick."""
_task = ProcessTask("audit-head-signing")


def publish(cp: dict[str, Any]) -> list[str]:
    """Give a signed checkpoint to every configured witness that holds an older one; the names it went to."""
    sent = []
    for witness in configured():
        if _published.get(witness.name, -1) >= int(cp["seq"]):
            continue
        try:
            newest = witness.newest()
            if newest is None or int(newest["seq"]) < int(cp["seq"]):
                witness.publish(cp)
                sent.append(witness.name)
        except (WitnessError, OSError) as exc:
            log.error("audit witness %s: could not publish the head at event %s: %s", witness.name, cp["seq"], exc)
            continue
        _published[witness.name] = int(cp["seq"])
    return sent


async def tick() -> dict[str, Any] | None:
    """One round: sign the head if it moved since the newest checkpoint, then publish the newest checkpoint.
    Returns that checkpoint (None for an empty chain or without a signing key)."""
    heads = await raw("SELECT seq FROM audit_head WHERE name = 'main'")
    newest = await latest_checkpoint()
    if heads and int(heads[0]["seq"]) > (int(newest["seq"]) if newest else 0) and load_signing_key() is not None:
        newest = await checkpoint_now()
    if newest is not None and "signature" in newest:
        await anyio.to_thread.run_sync(publish, newest)  # file syncs and HTTP calls stay off the event loop
    return newest


async def run(interval: float) -> None:
    """Tick every `interval` seconds until cancelled; a failed round is logged and the next one tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the timer must outlive a busy database or a full witness disk
            log.exception("audit head signing failed; retrying in %s seconds", interval)


def start() -> None:
    """Start the timer in this process (once), when MUTUAL_AUDIT_SIGN_SECONDS is above 0. A pinned key or a
    witness that cannot be understood stops the start with the message that names it."""
    pinned_keys()
    configured()
    seconds = get_settings().audit_sign_seconds
    if seconds > 0:
        _task.start(lambda: run(seconds))


async def stop() -> None:
    await _task.stop()
