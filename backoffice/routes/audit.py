"""The compliance role's audit viewer."""

from __future__ import annotations

from litestar import Controller, Request, Response, get

from server.audit import service as audit
from server.web import render, requires_role


class AuditController(Controller):
    path = "/audit"
    guards = [requires_role("compliance")]

    @get("/", name="audit-list")
    async def list_events(self, request: Request, before: int | None = None) -> Response:
        """A page of events, newest first, with the chain's verification result."""
        events = await audit.list_events(request.user, before=before)
        verified = await audit.verify(request.user)
        return render(request, "backoffice/audit.html", events=events, verified=verified)
