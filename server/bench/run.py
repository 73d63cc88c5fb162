"""`mutual bench`: build or reuse the dataset, start the faces and the floor, measure, report."""

from __future__ import annotations

import asyncio
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from server import processes
from server.bench.dataset import bench_email
from server.bench.load import Measurement, Request, Session, measure, sign_in
from server.settings import REPO_ROOT, get_settings

TARGETS = {
    # (endpoint, concurrency): (p95 ms, p99 ms or None)
    ("people list", 16): (50.0, 100.0),
    ("people list fragment", 16): (50.0, 100.0),
    ("email search", 1): (20.0, None),
}
FLOOR_RATIO_TARGET = 1.5
DATASET_VERSION = 5  # bump when the schema or the audit hash format changes: the cache is rebuilt
VERIFY_TARGET = 200_000
IMPORT_TARGET = 5_000
ERASE_TARGET_MS = 100
AUDIT_OVERHEAD_TARGET = 0.15
# A failed sign-in costs the same whether the account exists: the ratio of the two medians.
SIGNIN_TIMING_RANGE = (0.8, 1.25)


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
def _servers(env: dict[str, str], floor: Path) -> Iterator[dict[str, str]]:
    from server.cli import serve_command

    procs: list[subprocess.Popen] = []
    urls = {}
    logs = Path(tempfile.mkdtemp(prefix="mutual-bench-logs-"))
    floor_cmd = [sys.executable, "-m", "uvicorn", "server.bench.floor:create_app", "--factory", "--host",
                 "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    try:
        for name in ("portal", "backoffice", "floor"):
            port = processes.free_port()
            command = (serve_command(name, "127.0.0.1", port) if name != "floor"
                       else [part.format(port=port) for part in floor_cmd])
            server_env = {**env, "MUTUAL_BENCH_FLOOR": str(floor)} if name == "floor" else env
            procs.append(processes.start(command, logs / f"{name}.log", env=server_env, cwd=REPO_ROOT))
            urls[name] = f"http://127.0.0.1:{port}"
            processes.wait_until_answering(f"{urls[name]}/healthz", procs[-1], logs / f"{name}.log", timeout=60)
        yield urls
    finally:
        processes.stop(procs)


def _dataset(opts: Options, backend: str) -> tuple[dict[str, str], dict, Path]:
    """The bench store for one backend, built on first use and cached under var/bench/."""
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
    return env, json.loads(meta.read_text()), floor


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


async def _http(urls: dict[str, str], meta: dict, total: int) -> list[Measurement]:
    staff = await sign_in(urls["backoffice"], "__Host-mutual-staff", *meta["staff"])
    customer = await sign_in(urls["portal"], "__Host-mutual-portal", *meta["customer"])
    rng = random.Random(11)
    sample = meta["sample"]

    def headers(session: Session, htmx: bool = False) -> dict[str, str]:
        h = {"cookie": session.cookie, "x-csrftoken": session.csrf}
        if htmx:
            h["hx-request"] = "true"
        return h

    with urllib.request.urlopen(urllib.request.Request(f"{urls['backoffice']}/people",
                                                       headers=headers(staff))) as resp:
        page = resp.read().decode()
    match = re.search(r'hx-get="/people\?after=([^"]+)"', page)
    after = match.group(1) if match else ""
    floor_after = ""
    with urllib.request.urlopen(f"{urls['floor']}/people") as resp:
        found = re.search(r'hx-get="/people\?after=([^"]+)"', resp.read().decode())
        floor_after = found.group(1) if found else ""

    def pick() -> dict:
        return sample[rng.randrange(len(sample))]

    bo, po, fl = urls["backoffice"], urls["portal"], urls["floor"]
    scenarios = {
        "people list": lambda i: Request("GET", f"{bo}/people", headers(staff)),
        "people list fragment": lambda i: Request("GET", f"{bo}/people?after={after}", headers(staff, True)),
        "person detail": lambda i: Request("GET", f"{bo}/people/{pick()['id']}", headers(staff)),
        "email search": lambda i: Request("POST", f"{bo}/people/search", headers(staff, True),
                                          {"query": bench_email(pick()["index"])}),
        "portal profile": lambda i: Request("GET", f"{po}/profile", headers(customer)),
        "portal access log": lambda i: Request("GET", f"{po}/access", headers(customer)),
        "floor: people list": lambda i: Request("GET", f"{fl}/people", {}),
        "floor: people list fragment": lambda i: Request("GET", f"{fl}/people?after={floor_after}", {}),
        "floor: person detail": lambda i: Request("GET", f"{fl}/people/{pick()['id']}", {}),
    }
    results = []
    for concurrency in (1, 16):
        for name, make in scenarios.items():
            n = total if concurrency == 16 else max(total // 2, 20)
            m = await measure(name, make, concurrency=concurrency, total=n)
            print(f"bench: {name:<28} c={concurrency:<2} {m.rps:8.1f} req/s  p50 {m.p50:6.1f} ms  "
                  f"p95 {m.p95:6.1f} ms  p99 {m.p99:6.1f} ms  errors {m.errors}", file=sys.stderr)
            results.append(m)
    return results


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _section(backend: str, meta: dict, figures: dict[str, float], results: list[Measurement]) -> str:
    by = {(m.name, m.concurrency): m for m in results}
    timing = figures["signin_known_ms"] / figures["signin_unknown_ms"]
    lines = [f"### {backend}", "",
             f"Dataset: {meta['people']:,} people, {meta['events']:,} audit events (built {meta['built'][:19]}Z).",
             "", "| endpoint | c | req/s | p50 ms | p95 ms | p99 ms | errors | target | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for m in results:
        target = TARGETS.get((m.name, m.concurrency))
        if target:
            p95, p99 = target
            ok = m.p95 < p95 and (p99 is None or m.p99 < p99) and m.errors == 0
            text = f"p95 < {p95:.0f}" + (f", p99 < {p99:.0f}" if p99 else "")
            verdict = _verdict(ok)
        else:
            text, verdict = "", ""
        lines.append(f"| {m.name} | {m.concurrency} | {m.rps:,.1f} | {m.p50:.1f} | {m.p95:.1f} | {m.p99:.1f} | "
                     f"{m.errors} | {text} | {verdict} |")
    lines += ["", "**Price of privacy** (Mutual / plaintext floor, median latency at c=1 and throughput at c=16):", "",
              "| page | p50 ratio c=1 | req/s ratio c=16 (floor / Mutual) | target | verdict |",
              "|---|---:|---:|---|---|"]
    for page in ("people list", "person detail"):
        mine, floor = by.get((page, 1)), by.get((f"floor: {page}", 1))
        mine16, floor16 = by.get((page, 16)), by.get((f"floor: {page}", 16))
        if mine and floor and mine16 and floor16:
            ratio, tput = mine.p50 / floor.p50, floor16.rps / mine16.rps
            lines.append(f"| {page} | {ratio:.2f} | {tput:.2f} | ≤ {FLOOR_RATIO_TARGET} | "
                         f"{_verdict(ratio <= FLOOR_RATIO_TARGET and tput <= FLOOR_RATIO_TARGET)} |")
    lines += ["", "| CLI figure | value | target | verdict |", "|---|---:|---|---|",
              f"| people imported per second (fresh store, through the gateway) | {figures['import_per_s']:,.0f} | "
              f"≥ {IMPORT_TARGET:,} | {_verdict(figures['import_per_s'] >= IMPORT_TARGET)} |",
              f"| people imported per second (dataset build) | {meta['import_people_per_s']:,.0f} | ≥ "
              f"{IMPORT_TARGET:,} | {_verdict(meta['import_people_per_s'] >= IMPORT_TARGET)} |",
              f"| audit events verified per second ({figures['verified']:,.0f} events) | "
              f"{figures['verify_per_s']:,.0f} | ≥ {VERIFY_TARGET:,} | "
              f"{_verdict(figures['verify_per_s'] >= VERIFY_TARGET)} |",
              f"| erase one person (median of 5, crypto-shredding) | {figures['erase_ms']:.1f} ms | "
              f"< {ERASE_TARGET_MS} ms | {_verdict(figures['erase_ms'] < ERASE_TARGET_MS)} |",
              f"| audit overhead on a person read (server side, with vs without the audit event) | "
              f"{figures['audit_overhead']:.0%} | ≤ {AUDIT_OVERHEAD_TARGET:.0%} | "
              f"{_verdict(figures['audit_overhead'] <= AUDIT_OVERHEAD_TARGET)} |",
              f"| failed sign-in, account exists / does not (median ms) | {figures['signin_known_ms']:.0f} / "
              f"{figures['signin_unknown_ms']:.0f} (ratio {timing:.2f}) | {SIGNIN_TIMING_RANGE[0]}–"
              f"{SIGNIN_TIMING_RANGE[1]} | {_verdict(SIGNIN_TIMING_RANGE[0] <= timing <= SIGNIN_TIMING_RANGE[1])} |",
              f"| field encryptions per second (AES-256-GCM, one core) | {figures['encrypt_per_s']:,.0f} | | |",
              f"| field decryptions per second | {figures['decrypt_per_s']:,.0f} | | |",
              f"| data keys rewrapped per second (key rotation, crypto only) | {figures['rewrap_per_s']:,.0f} | | |",
              ""]
    return "\n".join(lines)


def run(opts: Options) -> str:
    settings = get_settings()
    sections = []
    for backend in opts.backends:
        env, meta, floor = _dataset(opts, backend)
        figures = _cli_figures(env)
        with _servers(env, floor) as urls:
            results = asyncio.run(_http(urls, meta, opts.requests))
        sections.append(_section(backend, meta, figures, results))
    header = [
        "# Mutual benchmark", "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}.",
        f"Requests per endpoint: {opts.requests} at c=16, {max(opts.requests // 2, 20)} at c=1 (after 10 warm-up "
        "requests); client and servers share the machine. The floor is a plain SQLite table rendered with the "
        "same templates, without encryption, policy or audit, for every backend.",
        f"Targets are printed beside each figure; they are never a failing test. Cache: {opts.cache}"
        f" ({settings.var_dir} holds the product data, untouched).", "",
    ]
    report = "\n".join(header + sections)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(report)
    return report
