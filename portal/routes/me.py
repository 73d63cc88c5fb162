"""The customer's own data: profile (view and rectify) and who accessed it."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from server.audit import service as audit
from server.crm import service as people
from server.errors import Invalid
from server.web import render, requires_customer

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
PURPOSE = "self_service"
LABELS = {"given_name": "Given name", "family_name": "Family name", "email": "Email", "phone": "Phone",
          "address": "Address", "birth_date": "Date of birth"}
ACTIONS = {"read": "viewed", "list": "saw in a list", "search": "found by search", "update": "changed",
           "create": "created", "reveal": "revealed", "signin": "signed in", "signout": "signed out"}


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


class AccessController(Controller):
    path = "/access"
    guards = [requires_customer]

    @get("/", name="access-log")
    async def show(self, request: Request, before: int | None = None) -> Response:
        """Who accessed my data: role, time, action, fields and purpose."""
        events = await audit.my_access_log(request.user, before=before)
        return render(request, "portal/access.html", events=events, actions=ACTIONS, labels=LABELS)
