"""Staff single sign-on (OpenID Connect) on the backoffice: start at the provider, come back signed in.

POST /signin/sso keeps the ceremony's state, nonce and PKCE verifier server-side (AuthChallenge,
ten minutes) under the hash of a random handle held in the `__Host-mutual-staff-sso` cookie
(Secure, HttpOnly, SameSite=Lax: the provider sends the browser back with a top-level cross-site
GET, which must carry the cookie; Strict would drop it). The browser is then sent on to the provider.

That last step is a page (200) that forwards with a `Refresh` header and offers a link, not a 303:
every page's CSP says `form-action 'self'`, and Chromium applies form-action to the redirects that
follow a form submission, so a 303 from the form's POST to the provider would be blocked. The
forwarding page is a navigation of its own, which form-action does not govern.

GET /signin/sso/callback checks the cookie's handle and the state, exchanges the code, validates
the ID token and opens a session. Staff need a second factor however they sign in: the provider's
counts when its ID token says it asked for one (amr) or when MUTUAL_OIDC_MFA=provider trusts it to;
otherwise the session waits for Mutual's own code, like a password sign-in
(server.identity.oidc.second_factor_stage).

Callbacks that fail before anyone signed in at the provider (no or an expired attempt, an error
without an attempt, a wrong state, a code the provider refuses) count against the client address
(kind `sso`, with the larger free count of a wide key, since an office shares one address), so a
client cannot flood the audit with them. The provider's own answers (no role, switched off) do not
count; a signed-in browser that comes back to a spent answer (a reload) goes home, unaudited.

With no provider configured (MUTUAL_OIDC_ISSUER empty) both routes answer 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect

from server.actor import Actor
from server.db import write_transaction
from server.errors import TooManyAttempts
from server.identity import limits
from server.identity import oidc as service
from server.identity.service import anonymous_actor, audit_security
from server.settings import get_settings
from server.web.origin import public_origin
from server.web.rendering import render
from server.web.signin import client_address, device_of, signed_in_response

SSO_COOKIE = "__Host-mutual-staff-sso"
CALLBACK_PATH = "/signin/sso/callback"
HOME = "/"
# Failures a client can cause without signing in at the provider: these count towards the limit.
COUNTED = frozenset({"expired", "state", "exchange"})


def sso_cookie(handle: str, max_age: int) -> Cookie:
    return Cookie(key=SSO_COOKIE, value=handle, path="/", secure=True, httponly=True, samesite="lax",
                  max_age=max_age)


def redirect_uri(request: Request) -> str:
    """Where the provider sends the browser back: on MUTUAL_BACKOFFICE_ORIGIN, or (unset) on the origin
    this request came to. It must be registered at the provider exactly like this."""
    return f"{public_origin(request, 'backoffice')}{CALLBACK_PATH}"


def _forward_page(request: Request, url: str, label: str) -> Response:
    # The Refresh header forwards at once; the link is there if a browser does not follow it.
    return render(request, "sso_forward.html", label=label, url=url, headers={"refresh": f"0; url={url}"})


def oidc_handlers(page_extra: Mapping[str, Any] | None = None) -> list[Any]:
    """The single sign-on routes of the backoffice. `page_extra` is what the sign-in page gets from
    signin_handlers (so a failed sign-in shows the same page again, with the message)."""
    page: dict[str, Any] = {"login_label": "User name", "login_type": "text", **(page_extra or {})}

    def signin_page(request: Request, message: str, status: int) -> Response:
        settings = get_settings()
        extra = {"oidc_label": settings.oidc_label} if settings.oidc_issuer else {}
        response = render(request, "signin.html", status_code=status, message=message, **{**page, **extra})
        response.set_cookie(sso_cookie("", 0))
        return response

    async def failed(request: Request, exc: service.SsoFailed, keys: list[str] | None = None) -> Response:
        """Audit the failure and, for a failure the client could cause alone, count it against `keys`."""
        async with write_transaction():
            if keys and exc.reason in COUNTED:
                await limits.record("sso", "backoffice", keys)
            await audit_security(anonymous_actor("backoffice", request.state.request_id), "signin_sso",
                                 "failed", fields={"reason": exc.reason})
        return signin_page(request, str(exc), exc.status)

    @post("/signin/sso", name="backoffice-signin-sso")
    async def start(request: Request) -> Response:
        """Begin a single sign-on: keep state, nonce and PKCE verifier, then go to the provider."""
        settings = get_settings()
        if not settings.oidc_issuer:
            raise service.SsoNotConfigured()
        if isinstance(request.user, Actor):
            return Redirect(HOME, status_code=303)
        try:
            begun = await service.begin_signin(redirect_uri(request))
        except service.SsoFailed as exc:
            return await failed(request, exc)
        response = _forward_page(request, begun.url, settings.oidc_label)
        response.set_cookie(sso_cookie(begun.handle, service.CHALLENGE_MINUTES * 60))
        return response

    @get(CALLBACK_PATH, name="backoffice-signin-sso-callback")
    async def callback(request: Request) -> Response:
        """The provider's answer (?code&state, or ?error): on success a full session (a new token) and the
        start page. (Read from the query directly: `state` is a reserved parameter name in Litestar.)"""
        if not get_settings().oidc_issuer:
            raise service.SsoNotConfigured()
        # A wide key: the free attempts of many people behind one office address (WIDE_FACTOR times more).
        keys = [limits.wide_key("sso-ip", client_address(request))]
        try:
            await limits.check("sso", "backoffice", keys)
        except TooManyAttempts as exc:
            return signin_page(request, str(exc), 429)
        query = request.query_params
        try:
            result = await service.finish_signin(
                request.cookies.get(SSO_COOKIE, ""), code=query.get("code") or "", state=query.get("state") or "",
                error=query.get("error") or "",
                request_id=request.state.request_id, device=device_of(request), replaces=request.auth or None)
        except service.SsoFailed as exc:
            if exc.reason == "expired" and isinstance(request.user, Actor):
                # A signed-in browser came back to a spent answer (a reload, the back button): home.
                return Redirect(HOME, status_code=303)
            return await failed(request, exc, keys)
        response = signed_in_response("backoffice", result, HOME)  # on to Mutual's own code if needed
        response.set_cookie(sso_cookie("", 0))
        return response

    return [start, callback]
