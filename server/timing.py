"""Per-request phase timers for the bench-only `Server-Timing` header (`MUTUAL_BENCH_TIMING=1`).

Standard library only, so any layer may time itself without importing the web package:

    from server import timing
    with timing.phase("crypto"):
        ...

Outside a timed request (the normal case: the variable unset, the CLI, the tests) `phase` is one
context-variable lookup and a shared no-op context manager. Inside one, the time is added to the
phase's total for the request. Phases do not overlap: a phase entered while another is running is
counted to the outer one (the audit's statements count as audit, not as query), so the totals add up
to no more than the request's wall time.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

ENV_VARIABLE = "MUTUAL_BENCH_TIMING"
PHASES = ("session", "decide", "query", "audit", "crypto", "render")


def enabled() -> bool:
    """Whether this process times its requests (read at app start, by the web middleware)."""
    return os.environ.get(ENV_VARIABLE) == "1"


class Recorder:
    """The phase totals of one request, in seconds."""

    __slots__ = ("totals", "active")

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.active: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.active is not None:  # nested: the outer phase keeps the time
            yield
            return
        self.active = name
        started = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - started
            self.active = None


_current: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("mutual_timing", default=None)
_IDLE = contextlib.nullcontext()


def phase(name: str) -> AbstractContextManager[None]:
    """Time the block as phase `name` of the current request; free when no request is timed."""
    recorder = _current.get()
    return _IDLE if recorder is None else recorder.phase(name)


def start() -> tuple[Recorder, contextvars.Token]:
    """Begin timing the current request (the web middleware calls this)."""
    recorder = Recorder()
    return recorder, _current.set(recorder)


def finish(token: contextvars.Token) -> None:
    _current.reset(token)


def header_value(recorder: Recorder, total: float) -> str:
    """`Server-Timing` syntax: `name;dur=milliseconds`, the measured phases then the total."""
    parts = [f"{name};dur={recorder.totals[name] * 1000:.3f}" for name in PHASES if name in recorder.totals]
    parts += [f"{name};dur={secs * 1000:.3f}" for name, secs in recorder.totals.items() if name not in PHASES]
    parts.append(f"total;dur={total * 1000:.3f}")
    return ", ".join(parts)
