"""`mutual bench`: build or reuse the dataset, start the faces and the floor, measure, report."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from server import processes, timing
from server.bench import cpu, report
from server.bench.dataset import bench_email
from server.bench.load import Measurement, Request, Session, measure, sign_in
from server.settings import REPO_ROOT, get_settings

DATASET_VERSION = 6  # bump when the schema, the audit hash format or the build changes: the cache is rebuilt


@dataclass(frozen=True)
class Options:
    people: int
    events: int
    requests: int
    backends: list[str]
    out: Path
    cache: Path
    postgres_url: str | None


@contextmanager
def _servers(env: dict[str, str], floors: dict[str, str], workers: int = 1,
             ) -> Iterator[tuple[dict[str, str], list[int]]]:
    """The two faces and one floor server per entry of `floors` (label: SQLite path or PostgreSQL URL),
    each with `workers` processes; yields their URLs and the pids of the processes started."""
    from server.cli import serve_command

    procs: list[subprocess.Popen] = []
    urls = {}
    logs = Path(tempfile.mkdtemp(prefix="mutual-bench-logs-"))
    floor_cmd = [sys.executable, "-m", "uvicorn", "server.bench.floor:create_app", "--factory", "--host",
                 "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    extra = ["--workers", str(workers)] if workers > 1 else []
    try:
        for name in ("portal", "backoffice", *floors):
            port = processes.free_port()
            command = (serve_command(name, "127.0.0.1", port) if name not in floors
                       else [part.format(port=port) for part in floor_cmd])
            server_env = {**env, "MUTUAL_BENCH_FLOOR": floors[name]} if name in floors else env
            log = logs / f"{name.replace(' ', '-')}.log"
            procs.append(processes.start([*command, *extra], log, env=server_env, cwd=REPO_ROOT))
            urls[name] = f"http://127.0.0.1:{port}"
            processes.wait_until_answering(f"{urls[name]}/healthz", procs[-1], log, timeout=60)
        yield urls, [p.pid for p in procs]
    finally:
        processes.stop(procs)


def _dataset(opts: Options, backend: str) -> tuple[dict[str, str], dict, dict[str, str]]:
    """The bench store for one backend, built on first use and cached under var/bench/, and its floors:
    the backend's own ("floor"), and for PostgreSQL the SQLite one too, for reference."""
    name = f"{backend}-{opts.people}p-{opts.events}e-v{DATASET_VERSION}"
    folder = opts.cache / name
    folder.mkdir(parents=True, exist_ok=True)
    meta, floor = folder / "meta.json", folder / "floor.sqlite3"
    env = {**os.environ, "PICCOLO_CONF": "server.piccolo_conf", "MUTUAL_VAR_DIR": str(folder),
           "MUTUAL_KEY_FILE": str(folder / "keys.json")}
    env.pop("MUTUAL_KEYS", None)
    env.pop("MUTUAL_DEV", None)
    # The bench's staff account signs in with its password alone: it measures pages, not sign-in.
    env["MUTUAL_STAFF_MFA"] = "optional"
    # It sends no mail; the outbox setting only lets the faces start without an SMTP host.
    env["MUTUAL_MAIL_DEV_OUTBOX"] = "1"
    if backend == "postgres":
        assert opts.postgres_url
        db = f"mutual_bench_{opts.people}p_{opts.events}e_v{DATASET_VERSION}"
        env["MUTUAL_DATABASE_URL"] = opts.postgres_url.rpartition("/")[0] + f"/{db}"
    else:
        env["MUTUAL_DATABASE_URL"] = f"sqlite:///{folder / 'mutual.sqlite3'}"
    if not meta.exists():
        print(f"bench: building the {backend} dataset ({opts.people:,} people, {opts.events:,} audit events) "
              f"in {folder}", file=sys.stderr)
        for stale in folder.glob("*.sqlite3*"):
            stale.unlink()
        if backend == "postgres":
            asyncio.run(_recreate_pg(opts.postgres_url or "", db))
        mutual = [sys.executable, "-m", "server.cli"]
        subprocess.run([*mutual, "keys", "init", "--file", str(folder / "keys.json")], env=env, check=False,
                       cwd=REPO_ROOT, capture_output=True)
        subprocess.run([sys.executable, "-m", "server.bench.dataset", "--people", str(opts.people), "--events",
                        str(opts.events), "--meta", str(meta), "--floor", str(floor)], env=env, check=True,
                       cwd=REPO_ROOT)
    else:
        print(f"bench: reusing the cached {backend} dataset in {folder}", file=sys.stderr)
        # A dataset cached by older code gets the tables and triggers added since (idempotent).
        subprocess.run([sys.executable, "-m", "server.cli", "migrate"], env=env, check=True, cwd=REPO_ROOT,
                       capture_output=True)
    floors = {"floor": str(floor)}
    if backend == "postgres":
        floors = {"floor": env["MUTUAL_DATABASE_URL"], "sqlite floor": str(floor)}
    return env, json.loads(meta.read_text()), floors


async def _recreate_pg(admin_url: str, db: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()


def _cli_figures(env: dict[str, str]) -> dict[str, float]:
    """Verify the chain and time a fresh import in a scratch store, each in its own process."""
    # The sign-in timing figure makes dozens of failed sign-ins from one address: no lock-out here.
    env = {**env, "MUTUAL_SIGNIN_MAX_FAILURES": "1000000"}
    out = subprocess.run([sys.executable, "-m", "server.bench.figures"], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench figures failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


async def _http(urls: dict[str, str], meta: dict, total: int, pids: list[int], *, timed: bool = False,
                ) -> list[Measurement]:
    """Every endpoint at c=1 and c=16, the floors' too; `timed`: the faces only, at c=1, with the
    Server-Timing header of each response kept."""
    staff = await sign_in(urls["backoffice"], "__Host-mutual-staff", *meta["staff"])
    customer = await sign_in(urls["portal"], "__Host-mutual-portal", *meta["customer"])
    rng = random.Random(11)
    sample = meta["sample"]
    floors = [name for name in urls if name not in ("portal", "backoffice")]

    def headers(session: Session, htmx: bool = False) -> dict[str, str]:
        h = {"cookie": session.cookie, "x-csrftoken": session.csrf}
        if htmx:
            h["hx-request"] = "true"
        return h

    def second_page(url: str, h: dict[str, str]) -> str:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/people", headers=h)) as resp:
            found = re.search(r'hx-get="/people\?after=([^"]+)"', resp.read().decode())
        return found.group(1) if found else ""

    def pick() -> dict:
        return sample[rng.randrange(len(sample))]

    bo, po = urls["backoffice"], urls["portal"]
    after = second_page(bo, headers(staff))
    scenarios = {
        "people list": lambda i: Request("GET", f"{bo}/people", headers(staff)),
        "people list fragment": lambda i: Request("GET", f"{bo}/people?after={after}", headers(staff, True)),
        "person detail": lambda i: Request("GET", f"{bo}/people/{pick()['id']}", headers(staff)),
        "email search": lambda i: Request("POST", f"{bo}/people/search", headers(staff, True),
                                          {"query": bench_email(pick()["index"])}),
        "portal profile": lambda i: Request("GET", f"{po}/profile", headers(customer)),
        "portal access log": lambda i: Request("GET", f"{po}/access", headers(customer)),
    }
    def floor_pages(fl: str, fa: str) -> dict[str, Callable[[int], Request]]:
        return {"people list": lambda i: Request("GET", f"{fl}/people", {}),
                "people list fragment": lambda i: Request("GET", f"{fl}/people?after={fa}", {}),
                "person detail": lambda i: Request("GET", f"{fl}/people/{pick()['id']}", {})}

    for floor in floors:
        pages = floor_pages(urls[floor], second_page(urls[floor], {}))
        scenarios |= {f"{floor}: {page}": make for page, make in pages.items()}
    results = []
    for concurrency in (1,) if timed else (1, 16):
        for name, make in scenarios.items():
            n = total if concurrency == 16 else max(total // 2, 20)
            meter = cpu.Meter(pids)
            m = await measure(name, make, concurrency=concurrency, total=n, server_timing=timed)
            m = dataclasses.replace(m, cpu=meter.read().text())
            print(f"bench: {name:<30} c={concurrency:<2} {m.rps:8.1f} req/s  p50 {m.p50:6.1f} ms  "
                  f"p95 {m.p95:6.1f} ms  p99 {m.p99:6.1f} ms  errors {m.errors}  cpu {m.cpu}", file=sys.stderr)
            results.append(m)
    return results


def run(opts: Options) -> str:
    settings = get_settings()
    sections = []
    for backend in opts.backends:
        env, meta, floors = _dataset(opts, backend)
        figures = _cli_figures(env)
        with _servers(env, floors) as (urls, pids):
            results = asyncio.run(_http(urls, meta, opts.requests, pids))
        two = None
        if backend == "postgres":  # SQLite has one writer per database: more processes only queue on it
            print("bench: postgres with 2 processes per face", file=sys.stderr)
            with _servers(env, {"floor": floors["floor"]}, workers=2) as (urls, pids):
                two = asyncio.run(_http(urls, meta, opts.requests, pids))
        print(f"bench: {backend} Server-Timing pass", file=sys.stderr)
        with _servers({**env, timing.ENV_VARIABLE: "1"}, {}) as (urls, pids):
            timed = asyncio.run(_http(urls, meta, opts.requests, pids, timed=True))
        sections.append(report.section(backend, meta, figures, results, timed, two))
    header = [
        "# Mutual benchmark", "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}.",
        f"Requests per endpoint: {opts.requests} at c=16, {max(opts.requests // 2, 20)} at c=1 (after 10 warm-up "
        "requests); client and servers share the machine. The floor is a plain table in the backend's own "
        "database (SQLite file or the bench's PostgreSQL database), rendered with the same templates, without "
        "encryption, policy or audit; the PostgreSQL section also measures the SQLite floor, for reference. "
        "The dataset is ANALYZEd after its build.",
        f"Targets are printed beside each figure; they are never a failing test. Cache: {opts.cache}"
        f" ({settings.var_dir} holds the product data, untouched).", "", report.CPU_NOTE, "",
    ]
    report_text = "\n".join(header + sections)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(report_text)
    return report_text
