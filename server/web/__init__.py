"""Web plumbing shared by both faces: the app factory, sessions, guards, rendering, errors."""

from server.web.auth import (
    requires_customer,
    requires_recent_signin,
    requires_role,
    requires_signed_in,
    requires_staff,
)
from server.web.factory import create_face_app
from server.web.rendering import is_fragment_request, render
from server.web.signin import signin_handlers

__all__ = [
    "create_face_app",
    "is_fragment_request",
    "render",
    "requires_customer",
    "requires_recent_signin",
    "requires_role",
    "requires_signed_in",
    "requires_staff",
    "signin_handlers",
]
