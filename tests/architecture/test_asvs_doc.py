"""docs/security/asvs.md stays honest: its summary counts what its rows say, and every test a row
names as proof exists."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "security" / "asvs.md").read_text()
ROW_RE = re.compile(r"^\| (\d+)\.(\d+\.\d+) \| \d \| [^|]*\| \*\*(met|partly|not met|n/a)\*\* \|(.*)$", re.M)
SUMMARY_RE = re.compile(r"^\| V(\d+) [^|]*\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", re.M)
PROOF_RE = re.compile(r"`((?:tests|e2e)/[\w/]+\.py)::(\w+)`")
VERDICTS = ("met", "partly", "not met", "n/a")


def _rows() -> list[tuple[str, str, str]]:
    return [(f"{chapter}.{rest}", verdict, tail) for chapter, rest, verdict, tail in ROW_RE.findall(DOC)]


def test_the_summary_counts_the_rows() -> None:
    rows = _rows()
    assert len(rows) == 72, "V3, V6 and V7 at levels 1 and 2 have 72 requirements"
    counted: dict[str, Counter[str]] = {}
    for rid, verdict, _ in rows:
        counted.setdefault(rid.split(".")[0], Counter())[verdict] += 1
    summary = {chapter: dict(zip(VERDICTS, map(int, numbers[:4]), strict=True))
               for chapter, *numbers in SUMMARY_RE.findall(DOC)}
    assert summary == {chapter: {v: c[v] for v in VERDICTS} for chapter, c in counted.items()}
    for verdict, label in (("partly", "Partly"), ("not met", "Not met")):
        listed = re.search(rf"^{label}: (.+)$", DOC, re.M)  # ids, or "none."
        assert listed, f"the summary has no '{label}:' line"
        assert re.findall(r"\d+\.\d+\.\d+", listed.group(1)) == [r for r, v, _ in rows if v == verdict]


def test_every_proof_test_exists() -> None:
    missing = []
    proofs = [match for _, _, tail in _rows() for match in PROOF_RE.findall(tail)]
    assert len(proofs) > 100
    for path, name in proofs:
        source = REPO / path
        if not source.exists() or not re.search(rf"^(async )?def {name}\(", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert missing == []
