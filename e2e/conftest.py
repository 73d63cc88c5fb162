"""E2E set-up: seed a fresh database, start both faces as real processes on free loopback ports,
drive Debian's Chromium with Playwright, and check every page with axe-core."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright

from server import processes
from tests.oidc_provider import OidcProvider
from tests.smtp_server import SmtpServer

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("MUTUAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


@dataclass(frozen=True)
class Stack:
    portal: str
    backoffice: str
    var_dir: Path
    database: Path
    oidc: str = ""
    """Issuer URL of the OpenID provider (oidc-provider-mock) the backoffice signs staff in with."""


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback that receives the faces' mail; tests read links from it."""
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="session")
def stack(smtp: SmtpServer) -> Iterator[Stack]:
    var_dir = Path(tempfile.mkdtemp(prefix="mutual-e2e-"))
    env = {
        **os.environ,
        "MUTUAL_VAR_DIR": str(var_dir),
        "MUTUAL_KEY_FILE": str(var_dir / "keys.json"),
        "MUTUAL_DATABASE_URL": f"sqlite:///{var_dir / 'mutual.sqlite3'}",
        "PICCOLO_CONF": "server.piccolo_conf",
        "MUTUAL_SMTP_HOST": smtp.host,
        "MUTUAL_SMTP_PORT": str(smtp.port),
        "MUTUAL_SMTP_SECURITY": "none",
    }
    env.pop("MUTUAL_DEV", None)
    mutual = [sys.executable, "-m", "server.cli"]
    subprocess.run([*mutual, "keys", "init", "--file", str(var_dir / "keys.json")], env=env, check=True,
                   cwd=REPO, capture_output=True)
    from server.audit.signing import write_signing_key

    write_signing_key(var_dir / "audit-signing.key")  # the audit key, pinned as an operator pins it
    env["MUTUAL_AUDIT_PUBLIC_KEY"] = subprocess.run([*mutual, "audit", "public-key"], env=env, check=True, cwd=REPO,
                                                    capture_output=True, text=True).stdout.strip()
    subprocess.run([*mutual, "seed"], env=env, check=True, cwd=REPO, capture_output=True)
    subprocess.run([*mutual, "audit", "checkpoint"], env=env, check=True, cwd=REPO, capture_output=True)
    from server.cli import serve_command

    procs: list[subprocess.Popen] = []
    urls = {}
    oidc = OidcProvider().start()
    try:
        ports = {"portal": processes.free_port(), "backoffice": processes.free_port()}
        client_id, secret = oidc.register_client([f"http://localhost:{ports['backoffice']}/signin/sso/callback"])
        env.update(oidc.env(client_id, secret, label="Mock ID"))
        for face in ("portal", "backoffice"):
            log = var_dir / f"{face}.log"
            procs.append(processes.start(serve_command(face, "127.0.0.1", ports[face]), log, env=env, cwd=REPO))
            urls[face] = f"http://localhost:{ports[face]}"
            processes.wait_until_answering(f"{urls[face]}/healthz", procs[-1], log)
        yield Stack(urls["portal"], urls["backoffice"], var_dir, var_dir / "mutual.sqlite3", oidc.issuer)
    finally:
        oidc.stop()
        processes.stop(procs)
        if os.environ.get("MUTUAL_E2E_KEEP"):
            print(f"e2e: kept {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's chromium (make test does it as root)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    # Script errors and CSP violations; 4xx answers are expected (validation), so resource-load
    # messages are not errors here, but any 5xx answer is.
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith(("Failed to load resource", "Response Status Error"))
            else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: errors.append(f"{r.status} from {r.url}") if r.status >= 500 else None)
    yield page
    context.close()
    assert not errors, f"the browser saw errors: {errors}"


_AXE = Axe()


def check_accessibility(page: Page, name: str) -> None:
    """axe-core on the page as it is now: zero violations. Also saves the screenshot used in the docs."""
    results = _AXE.run(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    if results.violations_count:
        details = json.dumps([{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]]}
                              for v in results.response["violations"]], indent=1)
        pytest.fail(f"axe-core found {results.violations_count} violation(s) on {name}:\n{details}")
