"""Every portal route, in one explicit list."""

from __future__ import annotations

from typing import Any

from portal.routes.email_links import email_link_handlers, on_unverified
from portal.routes.me import AccessController, ProfileController, home
from server.identity.service import customer_sign_in
from server.web import signin_handlers
from server.web.account import account_handlers
from server.web.passkeys import passkey_handlers


def route_handlers() -> list[Any]:
    return [
        *signin_handlers("portal", customer_sign_in, login_label="Email address", login_type="email",
                         home="/profile", page_extra={"email_link": True, "passkey_signin": True},
                         on_unverified=on_unverified),
        *email_link_handlers(),
        *account_handlers("portal"),
        *passkey_handlers("portal", home="/profile"),
        home,
        ProfileController,
        AccessController,
    ]
