"""A bounded HTTP load client: N requests at concurrency C, latencies measured per request."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

CSRF_RE = re.compile(r'name="_csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    data: dict[str, str] | None = None


@dataclass(frozen=True)
class Measurement:
    name: str
    concurrency: int
    requests: int
    rps: float
    p50: float
    p95: float
    p99: float
    errors: int
    server_timing: tuple[str, ...] = ()
    """The `Server-Timing` header of each measured response (faces started with MUTUAL_BENCH_TIMING=1)."""
    cpu: str = ""
    """Cores busy during the measurement: machine / servers / client (see server/bench/cpu.py)."""


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    index = min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[index]


async def measure(name: str, make: Callable[[int], Request], *, concurrency: int, total: int,
                  warmup: int = 10, server_timing: bool = False) -> Measurement:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for i in range(warmup):
            r = make(i)
            await client.request(r.method, r.url, headers=r.headers, data=r.data)
        latencies: list[float] = []
        timings: list[str] = []
        errors = 0
        counter = iter(range(total))

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                r = make(i)
                t0 = time.perf_counter()
                resp = await client.request(r.method, r.url, headers=r.headers, data=r.data)
                latencies.append((time.perf_counter() - t0) * 1000)
                if resp.status_code != 200:
                    errors += 1
                if server_timing and "server-timing" in resp.headers:
                    timings.append(resp.headers["server-timing"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return Measurement(name, concurrency, total, total / elapsed, statistics.median(ordered),
                       _percentile(ordered, 0.95), _percentile(ordered, 0.99), errors, tuple(timings))


@dataclass(frozen=True)
class Session:
    cookie: str
    csrf: str


async def sign_in(base: str, cookie_prefix: str, login: str, password: str) -> Session:
    """Sign in like a browser would; cookies are carried by hand (they are Secure, the bench is http)."""
    async with httpx.AsyncClient(timeout=30) as client:
        form = await client.get(f"{base}/signin")
        csrf_cookie = form.cookies.get(f"{cookie_prefix}-csrf") or ""
        token = CSRF_RE.search(form.text).group(1)  # type: ignore[union-attr]
        resp = await client.post(f"{base}/signin", data={"_csrf_token": token, "login": login,
                                                          "password": password},
                                 headers={"cookie": f"{cookie_prefix}-csrf={csrf_cookie}"})
        if resp.status_code != 303:
            raise RuntimeError(f"bench sign-in at {base} failed with {resp.status_code}")
        session = resp.cookies.get(cookie_prefix)
    return Session(cookie=f"{cookie_prefix}={session}; {cookie_prefix}-csrf={csrf_cookie}", csrf=token)
