"""The signed-in user's own security pages, on both faces: overview, password, sessions."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from server.errors import Invalid
from server.identity import service as identity
from server.web.auth import (
    ensure_recent_signin,
    requires_recent_signin,
    requires_signed_in,
    session_cookie,
)
from server.web.rendering import render

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
METHODS = {"password": "Password", "password+totp": "Password and authenticator code",
           "password+recovery_code": "Password and recovery code", "passkey": "Passkey",
           "oidc": "Single sign-on", "email_link": "Emailed link", "reset_link": "Password reset link"}
CHANGED = {
    "password": "Your password is changed. If someone else may have known the old one, sign out your other "
                "sessions below.",
    "factor": "How you sign in has changed. If that was because of a lost device, sign out your other "
              "sessions below.",
}
PASSWORD_LABELS = {"current": "Current password", "password": "New password"}


def _nav(request: Request) -> str:
    return f"{request.app.state.face}/_nav.html"


def account_handlers(face: str) -> list[Any]:
    """Handlers of /account on one face; the second factor pages are the backoffice's own."""

    @get("/account", guards=[requires_signed_in], name=f"{face}-account")
    async def overview(request: Request) -> Response:
        """How I sign in, and where I am signed in."""
        sessions = await identity.list_sessions(request.user, request.auth or "")
        has_password = await identity.has_password(request.user)
        return render(request, "account.html", nav=_nav(request), sessions=len(sessions),
                      has_password=has_password)

    @get("/account/password", guards=[requires_signed_in], name=f"{face}-password-form")
    async def password_form(request: Request) -> Response:
        """Set or change my password."""
        needs = await identity.password_needs_current(request.user, request.auth or "")
        return render(request, "account_password.html", nav=_nav(request), needs_current=needs, errors={},
                      labels=PASSWORD_LABELS)

    @post("/account/password", guards=[requires_signed_in], name=f"{face}-password")
    async def password_save(request: Request, data: Form) -> Response:
        """Save a new password: the session gets a new token, other sessions stay until revoked."""
        if face == "backoffice" or not await identity.has_password(request.user):
            # Staff sign in with two factors, and the current password proves only one of them; a first
            # password is a new way in, which no old session may add (ASVS 7.5.1).
            ensure_recent_signin(request.user)
        try:
            result = await identity.set_password(request.user, request.auth or "", data.get("current", ""),
                                                 data.get("password", ""))
        except Invalid as exc:
            needs = await identity.password_needs_current(request.user, request.auth or "")
            return render(request, "account_password.html", nav=_nav(request), needs_current=needs,
                          errors=exc.errors, labels=PASSWORD_LABELS, status_code=400)
        # Offer to end the other sessions right after a credential change (ASVS 7.4.3).
        response = Redirect("/account/sessions?changed=password", status_code=303)
        response.set_cookie(session_cookie(face, result.token))
        return response

    @get("/account/sessions", guards=[requires_signed_in], name=f"{face}-sessions")
    async def sessions(request: Request, ended: str | None = None, changed: str | None = None) -> Response:
        """Where I am signed in."""
        rows = await identity.list_sessions(request.user, request.auth or "")
        flash = {"one": "That session is signed out.", "others": "Every other session is signed out."}
        notice = CHANGED.get(changed or "")
        return render(request, "account_sessions.html", nav=_nav(request), sessions=rows, methods=METHODS,
                      flash=notice or flash.get(ended or ""))

    @post("/account/sessions/{handle:str}/revoke", guards=[requires_recent_signin],
          name=f"{face}-session-revoke")
    async def revoke(request: Request, handle: str) -> Response:
        """Sign out one session (my own only); revoking the current one signs me out here."""
        ended = await identity.revoke_session(request.user, handle, request.auth or "")
        if ended is None:
            return render(request, "error.html", status=404, status_code=404,
                          message="There is no such session of yours. It may have ended already.", errors={})
        if ended == "current":
            response = Redirect("/signin", status_code=303)
            response.set_cookie(session_cookie(face, "", max_age=0))
            return response
        return Redirect("/account/sessions?ended=one", status_code=303)

    @post("/account/sessions/revoke-others", guards=[requires_recent_signin], name=f"{face}-sessions-revoke")
    async def revoke_others(request: Request) -> Response:
        """Sign out everywhere but here."""
        await identity.revoke_other_sessions(request.user, request.auth or "")
        return Redirect("/account/sessions?ended=others", status_code=303)

    return [overview, password_form, password_save, sessions, revoke, revoke_others]
