"""Sign-in and sign-out handlers, built once per face."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from server.actor import Actor
from server.errors import Invalid, SignInFailed, TooManyAttempts
from server.identity.device import device_label
from server.identity.service import NotVerified, SignedIn, forget_session, sign_out
from server.web.auth import SESSION_COOKIES, session_cookie
from server.web.rendering import render


class SignIn(Protocol):
    def __call__(self, login: str, password: str, client: str, request_id: str, /, device: str = "",
                 replaces: str | None = None) -> Awaitable[SignedIn]: ...
OnUnverified = Callable[[Request, uuid.UUID], Awaitable[Response]]
# Where a sign-in that still waits for a second factor continues.
STAGE_PAGES = {"mfa": "/signin/mfa", "enrol": "/signin/enrol"}


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def device_of(request: Request) -> str:
    return device_label(request.headers.get("user-agent"))


def signed_in_response(face: str, result: SignedIn, home: str) -> Response:
    """Redirect after a sign-in step, carrying the new session token (a fresh one at every step)."""
    response = Redirect(STAGE_PAGES.get(result.stage, home), status_code=303)
    response.set_cookie(session_cookie(face, result.token))
    return response


def signin_handlers(face: str, sign_in: SignIn, *, login_label: str, login_type: str, home: str,
                    page_extra: dict[str, Any] | None = None,
                    on_unverified: OnUnverified | None = None) -> list[Any]:
    """`page_extra` switches on the sign-in page's other ways in (passkey, email link, SSO)."""
    page = {"login_label": login_label, "login_type": login_type, **(page_extra or {})}

    @get("/signin", name=f"{face}-signin-form")
    async def signin_form(request: Request) -> Response:
        """The sign-in form."""
        if isinstance(request.user, Actor):
            return Redirect(home, status_code=303)
        expired = "Your sign-in took too long. Sign in again." if request.query_params.get("expired") else None
        return render(request, "signin.html", message=expired, **page)

    @post("/signin", name=f"{face}-signin")
    async def signin(request: Request,
                     data: dict[str, str] = Body(media_type=RequestEncodingType.URL_ENCODED)) -> Response:
        """Check the credentials; on success a fresh session (a new token) replaces any old one."""
        try:
            # The browser's old session (signed in, or waiting for a code) ends with this sign-in.
            result = await sign_in(data.get("login", ""), data.get("password", ""), client_address(request),
                                   request.state.request_id, device_of(request),
                                   replaces=request.cookies.get(SESSION_COOKIES[face]) or None)
        except NotVerified as exc:
            if on_unverified is not None:
                return await on_unverified(request, exc.account_id)
            return render(request, "signin.html", status_code=400, message=str(exc), **page)
        except (SignInFailed, TooManyAttempts, Invalid) as exc:
            status = 429 if isinstance(exc, TooManyAttempts) else 400
            message = str(exc) if not isinstance(exc, Invalid) else "Enter both fields to sign in."
            return render(request, "signin.html", status_code=status, message=message, **page)
        return signed_in_response(face, result, home)

    @post("/signout", name=f"{face}-signout")
    async def signout(request: Request) -> Response:
        """End this session, here and in the database."""
        if isinstance(request.user, Actor):
            await sign_out(request.user, request.auth or "")
        elif token := request.cookies.get(SESSION_COOKIES[face]):
            await forget_session(token)  # a sign-in still waiting for its code ends too
        response = Redirect("/signin", status_code=303)
        response.set_cookie(session_cookie(face, "", max_age=0))
        return response

    return [signin_form, signin, signout]
