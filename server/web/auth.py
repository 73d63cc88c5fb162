"""Sessions to actors, guards, and the session cookie of each face."""

from __future__ import annotations

import datetime as dt
import uuid

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from server import timing
from server.actor import Actor
from server.errors import ReauthenticationRequired
from server.identity.service import resume_session
from server.settings import get_settings

SESSION_COOKIES = {"portal": "__Host-mutual-portal", "backoffice": "__Host-mutual-staff"}
CSRF_COOKIES = {"portal": "__Host-mutual-portal-csrf", "backoffice": "__Host-mutual-staff-csrf"}


class SessionMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the face's session cookie to an Actor (or None for anonymous visitors)."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        face = connection.app.state.face
        request_id = uuid.uuid4().hex
        connection.state.request_id = request_id
        token = connection.cookies.get(SESSION_COOKIES[face], "")
        with timing.phase("session"):
            actor = await resume_session(face, token, request_id) if token else None
        return AuthenticationResult(user=actor, auth=token if actor else None)


def session_cookie(face: str, token: str, max_age: int | None = None) -> Cookie:
    return Cookie(key=SESSION_COOKIES[face], value=token, path="/", secure=True, httponly=True,
                  samesite="lax", max_age=max_age)


def requires_signed_in(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if not isinstance(connection.user, Actor):
        raise NotAuthorizedException("Sign in first.")


def requires_staff(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    requires_signed_in(connection, handler)
    if connection.user.kind != "staff":
        raise NotAuthorizedException("Sign in with a staff account.")


def requires_customer(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    requires_signed_in(connection, handler)
    if connection.user.kind != "customer":
        raise NotAuthorizedException("Sign in with your customer account.")


def requires_recent_signin(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Changes to how one signs in need a sign-in within the last `reauth_minutes`: whoever finds an
    unlocked, signed-in browser cannot lock its owner out or add their own passkey."""
    requires_signed_in(connection, handler)
    ensure_recent_signin(connection.user)


def ensure_recent_signin(actor: Actor) -> None:
    minutes = get_settings().reauth_minutes
    signed_in_at = actor.signed_in_at
    if signed_in_at is None or signed_in_at < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes):
        raise ReauthenticationRequired(
            f"For your security, this change needs a sign-in from the last {minutes} minutes. "
            "Sign out (top right), sign in again, then come back to this page.")


def requires_role(role: str):  # noqa: ANN201 - a guard factory
    def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        requires_staff(connection, handler)
        if role not in connection.user.roles:
            raise PermissionDeniedException(f"This page needs the {role} role; ask an administrator for it.")

    guard.__name__ = f"requires_role_{role}"
    return guard
