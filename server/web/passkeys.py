"""Passkey (WebAuthn) handlers, built once per face: the account's passkey list, registration, and
sign-in with a passkey. The browser side is static/passkeys.js.

Each ceremony's challenge is found again through a random handle in a `__Host-` cookie (Secure,
HttpOnly, SameSite=Strict, five minutes): sign-in has no session to key it by, and one mechanism for
both ceremonies keeps registration working across a session rotation; the server keeps only the
handle's hash and deletes the challenge on first use.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect

from server.actor import Actor
from server.errors import TooManyAttempts
from server.identity import passkeys as service
from server.web.auth import (
    SESSION_COOKIES,
    requires_customer,
    requires_recent_signin,
    requires_staff,
    session_cookie,
)
from server.web.origin import public_origin
from server.web.rendering import render
from server.web.signin import client_address, device_of

PAGE = "/account/passkeys"
MSG_NO_JSON = "The request did not carry a passkey answer. Reload the page and try again."


def challenge_cookie_name(face: str) -> str:
    return f"{SESSION_COOKIES[face]}-passkey"


def _challenge_cookie(face: str, handle: str, max_age: int) -> Cookie:
    return Cookie(key=challenge_cookie_name(face), value=handle, path="/", secure=True, httponly=True,
                  samesite="strict", max_age=max_age)


def face_origin(request: Request, face: str) -> str:
    """The face's public origin (server.web.origin: configured, never a production Host header)."""
    return public_origin(request, face)


def rp_id_of(origin: str) -> str:
    return urlsplit(origin).hostname or "localhost"


async def _payload(request: Request) -> Any:
    """The JSON body the script sends (a url-encoded form is read too, for plain form posts)."""
    content_type, _ = request.content_type
    if content_type == "application/json":
        try:
            return await request.json()
        except (ValueError, json.JSONDecodeError):
            return None
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        return {k: v for k, v in form.items() if k != "_csrf_token"}
    return None


def _error(message: str, status: int = 400) -> Response:
    return Response({"error": message}, status_code=status, media_type="application/json")


def _options_response(face: str, ceremony: service.Ceremony) -> Response:
    response = Response(ceremony.options, status_code=200, media_type="application/json")
    response.set_cookie(_challenge_cookie(face, ceremony.handle, service.CHALLENGE_MINUTES * 60))
    return response


def passkey_handlers(face: str, home: str) -> list[Any]:
    """The passkey routes of one face; `home` is where a passkey sign-in lands."""
    guard = requires_customer if face == "portal" else requires_staff
    cookie = challenge_cookie_name(face)

    @get(PAGE, guards=[guard], name=f"{face}-passkeys")
    async def passkey_list(request: Request, added: str | None = None, removed: str | None = None) -> Response:
        """The account's passkeys, with a form to add one and a button to remove each."""
        lost = " If a device was lost, also end its sessions under Security, Sessions."
        flash = f"Passkey added.{lost}" if added else f"Passkey removed.{lost}" if removed else None
        return render(request, "account_passkeys.html", passkeys=await service.list_passkeys(request.user),
                      flash=flash, label_max=service.LABEL_MAX)

    # Adding or removing a way in needs a recent sign-in (ASVS 7.5.1), like the other such changes.
    @post(f"{PAGE}/options", guards=[guard, requires_recent_signin], name=f"{face}-passkey-register-options")
    async def register_options(request: Request) -> Response:
        """Start adding a passkey: creation options for navigator.credentials.create()."""
        data = await _payload(request)
        label = data.get("label", "") if isinstance(data, dict) else ""
        try:
            ceremony = await service.start_registration(
                request.user, label if isinstance(label, str) else "", rp_id_of(face_origin(request, face)))
        except service.PasskeyRefused as exc:
            return _error(str(exc))
        return _options_response(face, ceremony)

    @post(PAGE, guards=[guard, requires_recent_signin], name=f"{face}-passkey-register")
    async def register(request: Request) -> Response:
        """Finish adding a passkey: check the authenticator's answer and keep the credential."""
        credential = await _payload(request)
        origin = face_origin(request, face)
        try:
            await service.finish_registration(request.user, request.cookies.get(cookie, ""), credential,
                                              origin, rp_id_of(origin))
        except service.PasskeyRefused as exc:
            response = _error(str(exc))
        else:
            response = Response({"redirect": f"{PAGE}?added=1"}, status_code=200, media_type="application/json")
        response.set_cookie(_challenge_cookie(face, "", 0))
        return response

    @post(f"{PAGE}/{{passkey_id:str}}/delete", guards=[guard, requires_recent_signin],
          name=f"{face}-passkey-delete")
    async def delete(request: Request, passkey_id: str) -> Response:
        """Remove one of the account's passkeys (another account's passkey is not found)."""
        await service.delete_passkey(request.user, passkey_id)
        return Redirect(f"{PAGE}?removed=1", status_code=303)

    @post("/signin/passkey/options", name=f"{face}-passkey-signin-options")
    async def signin_options(request: Request) -> Response:
        """Start a passkey sign-in: request options for navigator.credentials.get()."""
        ceremony = await service.start_signin(rp_id_of(face_origin(request, face)))
        return _options_response(face, ceremony)

    @post("/signin/passkey", name=f"{face}-passkey-signin")
    async def signin(request: Request) -> Response:
        """Check a passkey's answer and open a signed-in session; answers where to go next."""
        credential = await _payload(request)
        origin = face_origin(request, face)
        try:
            result = await service.finish_signin(
                face, request.cookies.get(cookie, ""), credential, origin, rp_id_of(origin),
                client_address(request), request.state.request_id, device_of(request),
                replaces=request.auth if isinstance(request.user, Actor) else None)
        except TooManyAttempts as exc:
            return _error(str(exc), 429)
        except service.PasskeyRefused as exc:
            response = _error(str(exc))
            response.set_cookie(_challenge_cookie(face, "", 0))
            return response
        response = Response({"redirect": home}, status_code=200, media_type="application/json")
        response.set_cookie(session_cookie(face, result.token))
        response.set_cookie(_challenge_cookie(face, "", 0))
        return response

    return [passkey_list, register_options, register, delete, signin_options, signin]
