"""Every backoffice route, in one explicit list."""

from __future__ import annotations

import logging
from typing import Any

from backoffice.routes.audit import AuditController
from backoffice.routes.mfa import mfa_handlers
from backoffice.routes.people import PeopleController, home
from backoffice.routes.records import RecordsController
from server.identity.oidc import configuration_problems
from server.identity.service import staff_sign_in
from server.settings import get_settings
from server.web import signin_handlers
from server.web.account import account_handlers
from server.web.oidc import oidc_handlers
from server.web.passkeys import passkey_handlers


def route_handlers() -> list[Any]:
    settings = get_settings()
    for problem in configuration_problems(settings):  # said at start-up, not only at the first SSO attempt
        logging.getLogger("mutual.sso").error("single sign-on is misconfigured: %s", problem)
    page_extra: dict[str, Any] = {"passkey_signin": True}
    if settings.oidc_issuer:
        page_extra["oidc_label"] = settings.oidc_label
    return [
        *signin_handlers("backoffice", staff_sign_in, login_label="User name", login_type="text", home="/",
                         page_extra=page_extra),
        *oidc_handlers(page_extra),
        *mfa_handlers(),
        *account_handlers("backoffice"),
        *passkey_handlers("backoffice", home="/"),
        home,
        PeopleController,
        AuditController,
        RecordsController,
    ]
