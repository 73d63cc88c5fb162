"""The architecture's rules (DESIGN.md section 1) hold: import-linter contracts and the gateway's monopoly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PERSONAL_TABLES = "server.crm.tables"
# The generic gateway reads personal tables by the names fields.yml declares, not through their Piccolo
# classes; organisations are business data in the same Piccolo app.
ALLOWED_IMPORTERS = {"server.crm.organisations"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and "0 broken" in result.stdout


def test_only_the_gateway_imports_the_personal_tables() -> None:
    offenders = []
    for package in ("server", "portal", "backoffice"):
        for path in (REPO / package).rglob("*.py"):
            name = _module_name(path)
            if "piccolo_migrations" in name or name == PERSONAL_TABLES:
                continue
            if PERSONAL_TABLES in _imports(path) and name not in ALLOWED_IMPORTERS:
                offenders.append(name)
    assert not offenders, f"modules reading personal tables around server.gateway: {offenders}"
