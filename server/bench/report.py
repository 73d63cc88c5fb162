"""The bench report: one Markdown section per backend, targets and verdicts beside the figures."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from server.bench.load import Measurement
from server.timing import PHASES

TARGETS = {
    # (endpoint, concurrency): (p95 ms, p99 ms or None)
    ("people list", 16): (50.0, 100.0),
    ("people list fragment", 16): (50.0, 100.0),
    ("email search", 1): (20.0, None),
}
FLOOR_RATIO_TARGET = 1.5
SCALING_TARGET = 1.6  # req/s at c=16 with 2 processes per face / with 1, person detail
VERIFY_TARGET = 200_000
IMPORT_TARGET = 5_000
ERASE_TARGET_MS = 100
AUDIT_OVERHEAD_TARGET = 0.15
# A failed sign-in costs the same whether the account exists: the ratio of the two medians.
SIGNIN_TIMING_RANGE = (0.8, 1.25)
CPU_NOTE = ("CPU: cores busy during each measurement, machine / Mutual and floor servers / load client "
            "(1.00 = one core all the time; the rest of the machine figure is the database and anything else).")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(results: Sequence[Measurement]) -> list[str]:
    lines = ["| endpoint | c | req/s | p50 ms | p95 ms | p99 ms | errors | target | verdict | CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
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
                     f"{m.errors} | {text} | {verdict} | {m.cpu} |")
    return lines


def price(results: Sequence[Measurement], floor: str, reference: str | None) -> list[str]:
    """Mutual / floor for the people list and the person detail; `reference` adds a second floor."""
    by = {(m.name, m.concurrency): m for m in results}
    head = "| page | p50 ratio c=1 | req/s ratio c=16 (floor / Mutual) | target | verdict |"
    rule = "|---|---:|---:|---|---|"
    if reference:
        head += f" {reference}: p50 ratio c=1 | {reference}: req/s ratio c=16 |"
        rule += "---:|---:|"
    lines = [head, rule]
    for page in ("people list", "person detail"):
        mine, mine16 = by.get((page, 1)), by.get((page, 16))
        base, base16 = by.get((f"{floor}: {page}", 1)), by.get((f"{floor}: {page}", 16))
        if not (mine and mine16 and base and base16):
            continue
        ratio, tput = mine.p50 / base.p50, base16.rps / mine16.rps
        line = (f"| {page} | {ratio:.2f} | {tput:.2f} | ≤ {FLOOR_RATIO_TARGET} | "
                f"{_verdict(ratio <= FLOOR_RATIO_TARGET and tput <= FLOOR_RATIO_TARGET)} |")
        ref, ref16 = by.get((f"{reference}: {page}", 1)), by.get((f"{reference}: {page}", 16))
        if reference and ref and ref16:
            line += f" {mine.p50 / ref.p50:.2f} | {ref16.rps / mine16.rps:.2f} |"
        lines.append(line)
    return lines


def phases(timed: Sequence[Measurement]) -> list[str]:
    """Median milliseconds per Server-Timing phase and endpoint (c=1); unmeasured phases stay empty."""
    per: dict[str, dict[str, float]] = {}
    for m in timed:
        values: dict[str, list[float]] = {}
        for header in m.server_timing:
            for part in header.split(","):
                name, _, dur = part.strip().partition(";dur=")
                values.setdefault(name, []).append(float(dur))
        # a phase missing from some responses counts 0 there: the median is over every response
        n = len(m.server_timing)
        per[m.name] = {k: statistics.median(v + [0.0] * (n - len(v))) for k, v in values.items()}
    seen = [p for p in PHASES if any(p in v for v in per.values())]
    lines = ["| endpoint | responses | " + " | ".join(seen) + " | total | rest |",
             "|---|---:|" + "---:|" * (len(seen) + 2)]
    for m in timed:
        got = per[m.name]
        cells = [f"{got[p]:.2f}" if p in got else "" for p in seen]
        total = got.get("total", float("nan"))
        rest = total - sum(got.get(p, 0.0) for p in seen)
        lines.append(f"| {m.name} | {len(m.server_timing)} | " + " | ".join(cells) + f" | {total:.2f} | {rest:.2f} |")
    return lines


def scaling(one: Sequence[Measurement], two: Sequence[Measurement]) -> str:
    a = {(m.name, m.concurrency): m for m in one}.get(("person detail", 16))
    b = {(m.name, m.concurrency): m for m in two}.get(("person detail", 16))
    if not (a and b):
        return "Scaling: person detail at c=16 was not measured with both process counts."
    ratio = b.rps / a.rps
    return (f"**Scaling**: person detail at c=16, req/s with 2 processes per face / 1 process = {b.rps:,.1f} / "
            f"{a.rps:,.1f} = **{ratio:.2f}** (target ≥ {SCALING_TARGET}: {_verdict(ratio >= SCALING_TARGET)}); "
            f"CPU during it (machine / servers / client, cores): {b.cpu} with 2 processes, {a.cpu} with 1.")


def cli_figures(meta: dict, figures: dict[str, float]) -> list[str]:
    timing = figures["signin_known_ms"] / figures["signin_unknown_ms"]
    return [
        "| CLI figure | value | target | verdict |", "|---|---:|---|---|",
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
    ]


def section(backend: str, meta: dict, figures: dict[str, float], results: Sequence[Measurement],
            timed: Sequence[Measurement], two: Sequence[Measurement] | None) -> str:
    reference = "sqlite floor" if backend == "postgres" else None
    lines = [f"### {backend}", "",
             f"Dataset: {meta['people']:,} people, {meta['events']:,} audit events (built {meta['built'][:19]}Z).",
             "", "One process per face:", "", *table(results), "",
             "**Price of privacy** (Mutual / plaintext floor in the same database, median latency at c=1 and "
             "throughput at c=16" + ("; the SQLite floor beside it for reference" if reference else "") + "):", "",
             *price(results, "floor", reference), ""]
    if two is not None:
        lines += ["Two processes per face (uvicorn --workers 2, the floor too):", "", *table(two), "",
                  scaling(results, two), "", *price(two, "floor", None), ""]
    lines += ["**Server-Timing** (a separate pass with MUTUAL_BENCH_TIMING=1, one process per face, c=1; median "
              "ms per phase; phases not entered stay empty; audit appears once the audit code times itself, until "
              "then its statements count as query; rest = total minus the phases: middleware, CSRF, routing, other "
              "code, and time spent waiting for a CPU; medians do not add up exactly):", "",
              *phases(timed), "", *cli_figures(meta, figures), ""]
    return "\n".join(lines)
