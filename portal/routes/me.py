"""The customer's own data: profile (view and rectify) and who accessed it."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Stream

from server.audit import service as audit
from server.crm import service as people
from server.errors import Invalid
from server.web import render, requires_customer

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
PURPOSE = "self_service"
LABELS = {"given_name": "Given name", "family_name": "Family name", "email": "Email", "phone": "Phone",
          "address": "Address", "birth_date": "Date of birth"}
ACTIONS = {"read": "viewed", "list": "saw in a list", "search": "found by search", "update": "changed",
           "create": "created", "reveal": "revealed", "signin": "signed in", "signout": "signed out",
           "view": "looked at the record of accesses", "export": "exported the record of accesses"}


@get("/", guards=[requires_customer], name="portal-home")
async def home() -> Redirect:
    """The start page is the profile."""
    return Redirect("/profile", status_code=303)


class ProfileController(Controller):
    path = "/profile"
    guards = [requires_customer]

    @get("/", name="profile")
    async def show(self, request: Request, saved: str | None = None) -> Response:
        """My data as the business holds it."""
        me = await people.get_person(request.user, request.user.person_id, purpose=PURPOSE)
        return render(request, "portal/profile.html", person=me, labels=LABELS,
                      flash="Your changes are saved." if saved else None)

    @get("/edit", name="profile-edit")
    async def edit_form(self, request: Request) -> Response:
        """Correct my data (rectification)."""
        me = await people.get_person(request.user, request.user.person_id, purpose=PURPOSE)
        return render(request, "portal/profile_form.html", values=me.values, errors={}, labels=LABELS)

    @post("/edit", name="profile-update")
    async def update(self, request: Request, data: Form) -> Response:
        """Save my corrections; bad input comes back with every problem named and nothing lost."""
        try:
            await people.update_person(request.user, request.user.person_id, data, purpose=PURPOSE)
        except Invalid as exc:
            return render(request, "portal/profile_form.html", values=data, errors=exc.errors, labels=LABELS,
                          status_code=422)
        return Redirect("/profile?saved=1", status_code=303)


ACCESS_FILTERS = ("from", "to", "action", "purpose")
ACCESS_LABELS = {"from": "From", "to": "To", "action": "What", "purpose": "Purpose"}


def _access_filters(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "") for k in ACCESS_FILTERS}


class AccessController(Controller):
    path = "/access"
    guards = [requires_customer]

    @get("/", name="access-log")
    async def show(self, request: Request, before: int | None = None) -> Response:
        """Who accessed my data: role, time, action, fields, purpose and, for a reveal, the reason (with
        the note staff wrote, opened with my own key); filtered by the query."""
        values = _access_filters(request)
        try:
            filters = audit.AuditFilters.parse(values)
        except Invalid as exc:
            return render(request, "portal/access.html", events=[], actions=ACTIONS, labels=ACCESS_LABELS,
                          values=values, params={}, errors=exc.errors, purposes=audit.purposes(),
                          reasons={}, status_code=422)
        events = await audit.my_access_log(request.user, filters=filters, before=before)
        reasons = await people.my_reveal_reasons(request.user, [e.reason for e in events if e.reason])
        return render(request, "portal/access.html", events=events, actions=ACTIONS, labels=ACCESS_LABELS,
                      values=values, params=filters.as_params(), errors={}, purposes=audit.purposes(),
                      reasons=reasons)

    @get("/download", name="access-log-download")
    async def download(self, request: Request,
                       file_format: Annotated[str, QueryParameter(name="format")] = "json") -> Stream:
        """My access log as a file (?format=json or csv), with the same filters; nothing is recorded."""
        filters = audit.AuditFilters.parse(_access_filters(request))
        export = await audit.my_access_log_download(request.user, file_format, filters)
        return Stream(export.chunks, media_type=export.media_type,
                      headers={"content-disposition": f'attachment; filename="{export.filename}"'})
