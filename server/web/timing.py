"""The bench-only `Server-Timing` header: per-phase durations of each request, when the process
runs with MUTUAL_BENCH_TIMING=1 (`mutual bench` sets it for one pass of its own; never in production).

Phases (see server/timing.py, which records them):
- session: resolving the session cookie to an actor (server/web/auth.py);
- decide: PolicySet.decide (server/policy/engine.py);
- query: the statements run through Piccolo's engine (`run_querystring`: query builders and
  `server.db.raw`), outside the other phases; BEGIN/COMMIT and driver calls made outside Piccolo
  (executemany in `insert_many`) are not in it;
- crypto: field encryption and decryption, data-key wrapping and unwrapping (server/vault/cipher.py);
- render: Jinja templates (server/web/rendering.py);
- audit: recording the gateway's events (server/gateway/audit.py), their statements included;
- total: the whole request inside the app, from the outermost middleware to the response start.
A phase that was not entered is left out, not guessed.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server import timing
from server.db import engine

HEADER = b"server-timing"


def _time_queries() -> None:
    """Make this process's Piccolo engine count its statements as the query phase (once). The engine
    classes have slots, so the instance becomes one of a subclass that only adds the timer."""
    db = engine()
    base = type(db)
    if getattr(base, "_mutual_timed", False):
        return

    async def run_querystring(self: Any, *args: Any, **kwargs: Any) -> Any:
        with timing.phase("query"):
            return await base.run_querystring(self, *args, **kwargs)

    timed = type(f"Timed{base.__name__}", (base,), {"__slots__": (), "_mutual_timed": True,
                                                     "run_querystring": run_querystring})
    db.__class__ = timed


def _server_timing(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        recorder, token = timing.start()
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = timing.header_value(recorder, time.perf_counter() - started).encode()
                message["headers"] = [*message.get("headers", []), (HEADER, value)]
            await send(message)

        try:
            await app(scope, receive, timed_send)
        finally:
            timing.finish(token)

    return middleware


def middleware() -> list[Any]:
    """The middleware to put first in a face's list: none unless MUTUAL_BENCH_TIMING=1."""
    if not timing.enabled():
        return []
    _time_queries()
    return [_server_timing]
