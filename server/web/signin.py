"""Sign-in and sign-out handlers, built once per face."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from server.actor import Actor
from server.errors import Invalid, SignInFailed, TooManyAttempts
from server.identity.service import SignedIn, sign_out
from server.web.auth import session_cookie
from server.web.rendering import render

SignIn = Callable[[str, str, str, str], Awaitable[SignedIn]]


def signin_handlers(face: str, sign_in: SignIn, *, login_label: str, login_type: str, home: str) -> list[Any]:
    page = {"login_label": login_label, "login_type": login_type}

    @get("/signin", name=f"{face}-signin-form")
    async def signin_form(request: Request) -> Response:
        """The sign-in form."""
        if isinstance(request.user, Actor):
            return Redirect(home, status_code=303)
        return render(request, "signin.html", **page)

    @post("/signin", name=f"{face}-signin")
    async def signin(request: Request,
                     data: dict[str, str] = Body(media_type=RequestEncodingType.URL_ENCODED)) -> Response:
        """Check the credentials; on success a fresh session (a new token) replaces any old one."""
        client = request.client.host if request.client else "unknown"
        try:
            result = await sign_in(data.get("login", ""), data.get("password", ""), client,
                                   request.state.request_id)
        except (SignInFailed, TooManyAttempts, Invalid) as exc:
            status = 429 if isinstance(exc, TooManyAttempts) else 400
            message = str(exc) if not isinstance(exc, Invalid) else "Enter both fields to sign in."
            return render(request, "signin.html", status_code=status, message=message, **page)
        response = Redirect(home, status_code=303)
        response.set_cookie(session_cookie(face, result.token))
        return response

    @post("/signout", name=f"{face}-signout")
    async def signout(request: Request) -> Response:
        """End this session, here and in the database."""
        if isinstance(request.user, Actor):
            await sign_out(request.user, request.auth or "")
        response = Redirect("/signin", status_code=303)
        response.set_cookie(session_cookie(face, "", max_age=0))
        return response

    return [signin_form, signin, signout]
