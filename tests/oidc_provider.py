"""A real OpenID provider for tests: PyPI's oidc-provider-mock, run as its own process on 127.0.0.1.

    with OidcProvider() as op:                      # a free port; stopped on exit
        client_id, secret = op.register_client(["https://testserver.local/signin/sso/callback"])
        op.set_user("u-1", {"preferred_username": "oidc-admin", "groups": ["crm-admins"]})
        env = op.env(client_id, secret, role_map="crm-admins=admin")   # MUTUAL_OIDC_* for the app
        ...                                         # the app sends the browser to the provider
        location = op.authorize(authorization_url, "u-1")   # what the provider's form does

How the mock works (oidc-provider-mock 0.3):
- The issuer is the URL the provider is reached at, so everything uses `http://127.0.0.1:PORT`
  (never `localhost`, which would make a second issuer).
- Clients must be registered (`--require-registration`): `register_client` posts to its dynamic
  registration endpoint (RFC 7591) and gets a client id and secret; the provider then checks the
  redirect URI and the secret like a real one. The mock does not check PKCE (it sends the
  challenge and ignores it), but it requires the nonce (`--require-nonce`).
- Its sign-in page is a form with one text field, `sub` (placeholder "sub", no label) and an
  "Authorize" button (and "Deny"); the form posts to the authorization URL itself, which answers
  302 to the redirect URI with `code` and `state`. There is no password.
- The claims of a subject are set beforehand with `PUT /users/<sub>` (a JSON object): they go into
  the ID token (standard claims such as preferred_username only with the matching scope, e.g.
  profile; others such as groups always). A subject never set gets `{"email": sub}`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from server import processes

HOST = processes.HOST


def set_user(issuer: str, sub: str, claims: dict[str, Any]) -> None:
    """Give subject `sub` these claims at the provider (replacing earlier ones)."""
    response = httpx.put(f"{issuer}/users/{quote(sub, safe='')}", json=claims, timeout=10)
    response.raise_for_status()


def register_client(issuer: str, redirect_uris: list[str]) -> tuple[str, str]:
    """Register a confidential client (client_secret_basic); returns (client_id, client_secret)."""
    response = httpx.post(f"{issuer}/oauth2/clients", json={"redirect_uris": redirect_uris}, timeout=10)
    response.raise_for_status()
    body = response.json()
    return body["client_id"], body["client_secret"]


def authorize(authorization_url: str, sub: str, *, deny: bool = False) -> str:
    """Submit the provider's sign-in form for `sub` (or press Deny) as a browser would, and return
    the Location it sends the browser to: the app's callback with code and state (or error)."""
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        page = browser.get(authorization_url)
        assert page.status_code == 200, f"the provider refused the authorization request: {page.text[:500]}"
        assert 'name="sub"' in page.text, "the provider's form has changed"
        form = {"action": "deny"} if deny else {"sub": sub}
        answer = browser.post(authorization_url, data=form)
    assert answer.status_code in (302, 303), f"the provider answered {answer.status_code}: {answer.text[:500]}"
    return answer.headers["location"]


class OidcProvider:
    """oidc-provider-mock in a subprocess bound to 127.0.0.1 on a free port."""

    def __init__(self, port: int | None = None, *, require_registration: bool = True,
                 token_max_age: int = 3600) -> None:
        self.port = port or processes.free_port()
        self.issuer = f"http://{HOST}:{self.port}"
        self.require_registration = require_registration
        self.token_max_age = token_max_age
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="oidc-provider-", suffix=".log")[1])

    # ---- process ----

    def start(self, timeout: float = 20) -> OidcProvider:
        command = [sys.executable, "-m", "oidc_provider_mock", "--host", HOST, "--port", str(self.port),
                   "--require-nonce", "--token-max-age", str(self.token_max_age)]
        if self.require_registration:
            command.append("--require-registration")
        env = {**os.environ, "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}
        self._proc = processes.start(command, self._log, env=env)
        try:
            processes.wait_until_answering(f"{self.issuer}/.well-known/openid-configuration", self._proc,
                                           self._log, timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            processes.stop([self._proc])
            self._proc = None

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-5000:]

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- provider operations ----

    def register_client(self, redirect_uris: list[str]) -> tuple[str, str]:
        return register_client(self.issuer, redirect_uris)

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        set_user(self.issuer, sub, claims)

    def authorize(self, authorization_url: str, sub: str, *, deny: bool = False) -> str:
        return authorize(authorization_url, sub, deny=deny)

    def env(self, client_id: str, client_secret: str, *, role_map: str = "crm-admins=admin,crm-sales=sales",
            role_claim: str = "groups", team_claim: str = "", label: str = "Mock ID") -> dict[str, str]:
        """The MUTUAL_OIDC_* settings that point the backoffice at this provider."""
        return {
            "MUTUAL_OIDC_ISSUER": self.issuer,
            "MUTUAL_OIDC_CLIENT_ID": client_id,
            "MUTUAL_OIDC_CLIENT_SECRET": client_secret,
            "MUTUAL_OIDC_ROLE_CLAIM": role_claim,
            "MUTUAL_OIDC_ROLE_MAP": role_map,
            "MUTUAL_OIDC_TEAM_CLAIM": team_claim,
            "MUTUAL_OIDC_LABEL": label,
        }


if __name__ == "__main__":  # a provider for trying things by hand: python -m tests.oidc_provider
    with OidcProvider() as op:
        print(json.dumps({"issuer": op.issuer}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
