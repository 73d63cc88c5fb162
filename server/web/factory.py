"""The one app factory both faces use: sessions, CSRF, headers, errors, templates, static files."""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.middleware import DefineMiddleware
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from server.actor import system_actor
from server.audit import anchor, leader
from server.audit.chain import Entry, append
from server.db import engine
from server.errors import DomainError, Invalid
from server.gateway.scope import request_scope
from server.identity import session_cache
from server.kernel import check_database_keys, get_kernel
from server.mail import check_mail_settings
from server.policy.snapshot import load_snapshot, record_loaded
from server.settings import get_settings
from server.vault.store import request_key_cache
from server.web.auth import CSRF_COOKIES, SessionMiddleware
from server.web.rendering import build_environment, is_fragment_request, render
from server.web.timing import middleware as bench_timing

log = logging.getLogger("mutual.web")
SHARED_STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Powerful browser features off for every origin, passkeys (WebAuthn) allowed for this origin only.
PERMISSIONS_POLICY = (
    "accelerometer=(), browsing-topics=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), "
    "hid=(), magnetometer=(), microphone=(), midi=(), payment=(), serial=(), usb=(), "
    "publickey-credentials-create=(self), publickey-credentials-get=(self)"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "permissions-policy": PERMISSIONS_POLICY,
    "cache-control": "no-store",
}


@get("/healthz", sync_to_thread=False, include_in_schema=False)
def healthz() -> str:
    """Liveness for process supervisors and tests; says nothing about data."""
    return "ok"


def _error_page(request: Request, status: int, message: str, errors: dict[str, str] | None = None) -> Response:
    if status == 401:
        if request.headers.get("hx-request") == "true":
            return Response("", status_code=401, headers={"HX-Redirect": "/signin"})
        return Response("", status_code=303, headers={"Location": "/signin"})
    block = "content" if is_fragment_request(request) else None
    return render(request, "error.html", block=block, status_code=status, status=status, message=message,
                  errors=errors or {})


def _domain_error(request: Request, exc: DomainError) -> Response:
    return _error_page(request, exc.status, str(exc), exc.errors if isinstance(exc, Invalid) else None)


def _http_error(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail if exc.status_code < 500 else "Something went wrong on our side."
    if exc.status_code == 403 and "csrf" in str(exc.detail).lower():
        detail = "This form has expired. Reload the page and send it again."
    return _error_page(request, exc.status_code, str(detail))


def _server_error(request: Request, exc: Exception) -> Response:
    # Type, request id and the code path only: exception messages may echo personal input.
    log.error("unhandled %s in request %s\n%s", type(exc).__name__, getattr(request.state, "request_id", "?"),
              "".join(traceback.format_tb(exc.__traceback__)))
    return _error_page(request, 500, "Something went wrong on our side. Nothing was changed; try again.")


_POOL_USERS = 0  # apps of this process sharing the engine's pool (tests run both faces in one)


async def _startup(app: Litestar) -> None:
    global _POOL_USERS
    if _POOL_USERS == 0:
        await engine().start_connection_pool()
        await check_database_keys()
        await leader.check_durable_commits()
        await _record_policy_version(app.state.face)
        anchor.start()
        leader.start()
        session_cache.start()
    _POOL_USERS += 1


async def _shutdown(app: Litestar) -> None:
    global _POOL_USERS
    _POOL_USERS -= 1
    if _POOL_USERS == 0:
        await leader.stop()
        await anchor.stop()
        await session_cache.stop()
        await engine().close_connection_pool()


_HEADER_BYTES = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


async def _security_headers(message: Message, scope: Scope) -> None:
    """before_send: every response gets the security headers, error pages and 404s included."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", []))
        present = {name.lower() for name, _ in headers}
        message["headers"] = headers + [(k, v) for k, v in _HEADER_BYTES if k not in present]


async def _record_policy_version(face: str) -> None:
    """A start with other policies than the last one is a policy change: it goes into the audit,
    and the snapshot becomes what `mutual policies check` compares the files on disk against."""
    current = get_kernel().policies.version
    previous = load_snapshot()
    if previous is not None and previous.version != current:
        actor = system_actor("policy-load")
        await append(dataclasses.replace(actor, face=face),
                     Entry(action="policy_change", entity="policies", purpose="compliance_audit",
                           fields={"from": previous.version[:12], "to": current[:12]}), current)
    await record_loaded(get_settings().policies_dir, current)


def _request_key_cache(app: ASGIApp) -> ASGIApp:
    """Each request reuses the data keys it unwrapped (each at most once), and forgets them after."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        with request_key_cache(), request_scope():
            await app(scope, receive, send)

    return middleware


def create_face_app(face: str, face_title: str, route_handlers: Sequence[Any], templates: Path, static: Path,
                    debug: bool = False) -> Litestar:
    check_mail_settings(get_settings())  # no plain-text outbox of live links outside development
    kernel = get_kernel()
    _, csrf_key = kernel.keys.purpose_key("csrf", "csrf-token")
    app = Litestar(
        route_handlers=[
            healthz,
            create_static_files_router(path="/static", directories=[static, SHARED_STATIC],
                                       include_in_schema=False),
            *route_handlers,
        ],
        middleware=[*bench_timing(), _request_key_cache,
                    DefineMiddleware(SessionMiddleware, exclude=["^/static/", "^/healthz$"])],
        before_send=[_security_headers],
        csrf_config=CSRFConfig(
            secret=f"{face}:{csrf_key.hex()}", cookie_name=CSRF_COOKIES[face], cookie_secure=True,
            cookie_httponly=True, cookie_samesite="strict", header_name="x-csrftoken",
        ),
        exception_handlers={
            DomainError: _domain_error,
            NotAuthorizedException: _http_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        on_startup=[_startup],
        on_shutdown=[_shutdown],
        openapi_config=None,
        debug=debug,
    )
    app.state.face = face
    app.state.face_title = face_title
    app.state.jinja = build_environment(templates)
    return app
