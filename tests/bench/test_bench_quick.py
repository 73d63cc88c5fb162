"""`mutual bench --quick` runs end to end (the numbers are judged by people, never by a test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENDPOINTS = ["people list", "people list fragment", "person detail", "email search", "portal profile",
             "portal access log", "floor: people list", "floor: person detail"]


def test_the_quick_bench_builds_its_dataset_measures_every_endpoint_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTUAL_")}
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "bench", "--quick", "--backends", "sqlite", "--requests", "40",
         "--out", str(out), "--cache", str(tmp_path / "cache")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert "10,000 people, 100,000 audit events" in report
    for endpoint in ENDPOINTS:
        for concurrency in (1, 16):
            row = re.search(rf"^\| {re.escape(endpoint)} \| {concurrency} \| ([\d,.]+) \|.*\| (\d+) \|", report,
                            re.MULTILINE)
            assert row, f"no row for {endpoint} at c={concurrency}"
            assert float(row.group(1).replace(",", "")) > 0
    assert re.search(r"^\| people list \| [\d.]+ \| [\d.]+ \| ≤ 1.5 \|", report, re.MULTILINE)
    assert re.search(r"erase one person \(median of 5, crypto-shredding\) \| [\d.]+ ms", report)
    assert re.search(r"audit overhead on a person read \(server side[^|]*\| -?\d+% \|", report)
    assert re.search(r"failed sign-in, account exists / does not \(median ms\) \| \d+ / \d+ \(ratio [\d.]+\)", report)
    assert re.search(r"audit events verified per second \(\d[\d,]* events\) \| [\d,]+ \|", report)
    # every request of the run answered 200: the errors column is 0 on every row
    errors = re.findall(r"^\|[^|\n]+\| \d+ \| [\d,.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| (\d+) \|", report, re.MULTILINE)
    assert errors and set(errors) == {"0"}
