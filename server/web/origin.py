"""A face's public origin: what links in mails, the WebAuthn relying party and the SSO callback use.

Never taken from a request's Host header in production: a forged Host would put an attacker's
address into a genuine mail (a reset link to a look-alike site). The configured origin
(MUTUAL_PORTAL_ORIGIN, MUTUAL_BACKOFFICE_ORIGIN) is used; without it, only in development mode or
for a request to the loopback interface is the request's own origin trusted.
"""

from __future__ import annotations

from litestar import Request

from server.errors import DomainError
from server.identity.oidc import is_loopback
from server.settings import get_settings


class OriginNotConfigured(DomainError):
    status = 503


def public_origin(request: Request, face: str) -> str:
    settings = get_settings()
    configured = settings.portal_origin if face == "portal" else settings.backoffice_origin
    if configured:
        return configured
    if settings.dev_mode or is_loopback(request.url.hostname):
        return f"{request.url.scheme}://{request.url.netloc}"
    name = "MUTUAL_PORTAL_ORIGIN" if face == "portal" else "MUTUAL_BACKOFFICE_ORIGIN"
    raise OriginNotConfigured(
        f"This server does not know its public address, so it cannot send sign-in links or use passkeys "
        f"here. An administrator sets {name} (for example https://{face}.example.org).")
