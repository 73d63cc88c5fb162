"""Checks for the repository's Caddyfile (reverse proxy + security headers).

The first tests run ``caddy validate`` (skipped only when caddy is not installed);
the rest parse the Caddyfile text and need no caddy binary. Validation works
offline: it adapts and provisions the config but never contacts an ACME CA.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = REPO_ROOT / "Caddyfile"
CADDY = shutil.which("caddy")
ENV_PREFIX = "MUTUAL_"

needs_caddy = pytest.mark.skipif(
    CADDY is None, reason="caddy binary not found on PATH (install with: apt-get install caddy)"
)


# --------------------------------------------------------------------------- helpers


def _text() -> str:
    assert CADDYFILE.is_file(), f"missing {CADDYFILE}"
    return CADDYFILE.read_text(encoding="utf-8")


def _strip_comments(text: str) -> str:
    # '#' starts a comment only at the start of a token (not inside quotes).
    out = []
    for line in text.splitlines():
        in_quote = False
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_quote = not in_quote
            elif ch == "#" and not in_quote and (i == 0 or line[i - 1].isspace()):
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def _top_level_blocks(text: str) -> dict[str, str]:
    """Map each top-level block's label (e.g. '(security_headers)') to its body."""
    text = _strip_comments(text)
    blocks: dict[str, str] = {}
    depth = 0
    label_start = 0
    body_start = 0
    label = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':  # skip quoted strings; they may contain braces
            j = i + 1
            while j < len(text) and not (text[j] == '"' and text[j - 1] != "\\"):
                j += 1
            i = j + 1
            continue
        if ch == "{":
            # '{$VAR}' / '{placeholder}' are not block openers.
            close = text.find("}", i)
            nl = text.find("\n", i)
            if close != -1 and (nl == -1 or close < nl) and not text[i + 1 : close].strip() == "":
                i = close + 1
                continue
            if depth == 0:
                label = text[label_start:i].strip()
                body_start = i + 1
            depth += 1
        elif ch == "}":
            depth -= 1
            assert depth >= 0, "unbalanced braces in Caddyfile"
            if depth == 0:
                blocks[label] = text[body_start:i]
                label_start = i + 1
        i += 1
    assert depth == 0, "unbalanced braces in Caddyfile"
    return blocks


def _site_blocks() -> dict[str, str]:
    return {k: v for k, v in _top_level_blocks(_text()).items() if k and not k.startswith("(")}


def _site(host_var: str) -> str:
    for label, body in _site_blocks().items():
        if host_var in label:
            return body
    raise AssertionError(f"no site block addressed by {host_var}; found {list(_site_blocks())}")


def _security_headers() -> str:
    blocks = _top_level_blocks(_text())
    assert "(security_headers)" in blocks, "missing (security_headers) snippet"
    return blocks["(security_headers)"]


def _header_value(name: str) -> str:
    m = re.search(rf'^\s*{re.escape(name)}\s+"([^"]*)"', _security_headers(), re.M | re.I)
    assert m, f"{name} not set in (security_headers)"
    return m.group(1)


def _run_validate(tmp_path: Path, extra_env: dict[str, str] | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    # Keep caddy's storage/autosave out of the user's home; works with a read-only HOME.
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env.update(extra_env or {})
    try:
        proc = subprocess.run(
            [CADDY, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"caddy validate timed out after 60s; stderr:\n{exc.stderr}")
    assert proc.returncode == 0, (
        f"caddy validate failed (rc={proc.returncode}) with env {extra_env or {}}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )


# --------------------------------------------------------------------------- caddy validate


@needs_caddy
def test_caddy_validate_defaults(tmp_path: Path) -> None:
    _run_validate(tmp_path)


@needs_caddy
def test_caddy_validate_with_overrides(tmp_path: Path) -> None:
    _run_validate(
        tmp_path,
        {
            "MUTUAL_PORTAL_HOST": "portal.example.com",
            "MUTUAL_BACKOFFICE_HOST": "crm.example.com",
            "MUTUAL_PORTAL_UPSTREAM": "127.0.0.1:9000",
            "MUTUAL_BACKOFFICE_UPSTREAM": "unix//run/mutual/backoffice.sock",
            "MUTUAL_STAFF_ALLOW": "10.0.0.0/8 192.0.2.17/32 2001:db8::/32",
            "MUTUAL_TLS": "internal",
        },
    )


# --------------------------------------------------------------------------- static checks


def test_both_site_blocks_exist() -> None:
    labels = list(_site_blocks())
    assert any("{$MUTUAL_PORTAL_HOST:portal.localhost}" in label for label in labels), labels
    assert any("{$MUTUAL_BACKOFFICE_HOST:crm.localhost}" in label for label in labels), labels


def test_site_blocks_proxy_to_configured_upstreams() -> None:
    assert re.search(r"reverse_proxy\s+\{\$MUTUAL_PORTAL_UPSTREAM:127\.0\.0\.1:8000\}", _site("MUTUAL_PORTAL_HOST"))
    assert re.search(
        r"reverse_proxy\s+\{\$MUTUAL_BACKOFFICE_UPSTREAM:127\.0\.0\.1:8001\}", _site("MUTUAL_BACKOFFICE_HOST")
    )


def test_both_sites_import_security_headers() -> None:
    for host_var in ("MUTUAL_PORTAL_HOST", "MUTUAL_BACKOFFICE_HOST"):
        assert re.search(r"^\s*import\s+security_headers\s*$", _site(host_var), re.M), host_var


def test_csp_is_strict() -> None:
    csp = _header_value("Content-Security-Policy")
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert "object-src 'none'" in csp


def test_other_security_headers() -> None:
    hsts = _header_value("Strict-Transport-Security")
    assert re.search(r"max-age=(\d+)", hsts) and int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000
    assert "includeSubDomains" in hsts
    assert _header_value("X-Content-Type-Options") == "nosniff"
    assert _header_value("Referrer-Policy") == "no-referrer"
    assert _header_value("X-Frame-Options") == "DENY"
    assert "camera=()" in _header_value("Permissions-Policy")
    assert re.search(r"^\s*-Server\s*$", _security_headers(), re.M), "Server header is not removed"


def test_caddy_and_the_app_send_the_same_permissions_policy_and_csp() -> None:
    from server.web.factory import CSP, PERMISSIONS_POLICY

    assert _header_value("Permissions-Policy") == PERMISSIONS_POLICY
    assert _header_value("Content-Security-Policy") == CSP
    assert "publickey-credentials-get=(self)" in PERMISSIONS_POLICY, "passkey sign-in needs WebAuthn on this origin"


def test_backoffice_has_staff_allow_list() -> None:
    body = _site("MUTUAL_BACKOFFICE_HOST")
    assert re.search(r"@blocked\s+not\s+remote_ip\s+\{\$MUTUAL_STAFF_ALLOW:", body)
    assert re.search(r"respond\s+@blocked\b.*\b403\b", body)
    assert "MUTUAL_STAFF_ALLOW" not in _site("MUTUAL_PORTAL_HOST")
