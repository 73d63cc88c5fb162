"""People: list, search by email, detail with notes, create, edit, reveal."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from server.crm import service as people
from server.errors import Invalid
from server.web import is_fragment_request, render, requires_staff

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
LABELS = {"given_name": "Given name", "family_name": "Family name", "email": "Email", "phone": "Phone",
          "address": "Address", "birth_date": "Date of birth"}
REVEAL_INPUT = ("reason_code", "ticket", "note")


@get("/", guards=[requires_staff], name="backoffice-home")
async def home(request: Request) -> Redirect:
    """The start page: the people list, or the audit log for compliance officers."""
    roles = request.user.roles
    return Redirect("/audit" if roles == {"compliance"} else "/people", status_code=303)


class PeopleController(Controller):
    path = "/people"
    guards = [requires_staff]

    @get("/", name="people-list")
    async def list_people(self, request: Request, after: str | None = None, erased: str | None = None) -> Response:
        """People, newest first; 'More' loads the next page as a fragment."""
        page = await people.list_people(request.user, after=after)
        block = "rows" if is_fragment_request(request) and after else None
        return render(request, "backoffice/people.html", block=block, page=page, labels=LABELS,
                      flash="The person was erased: their data key is destroyed." if erased else None)

    @post("/search", name="people-search")
    async def search(self, request: Request, data: Form) -> Response:
        """Search by email, phone or name: a POST, so what was searched never sits in a URL or a log."""
        block = "results" if is_fragment_request(request) else None
        try:
            found = await people.find(request.user, data.get("query", ""))
        except Invalid as exc:
            return render(request, "backoffice/people.html", block=block, page=None, results=None,
                          search_errors=exc.errors, labels=LABELS, status_code=422)
        return render(request, "backoffice/people.html", block=block, page=None, results=found, labels=LABELS)

    @get("/new", name="people-new")
    async def new_form(self, request: Request) -> Response:
        """An empty person form."""
        return render(request, "backoffice/person_form.html", person=None, values={}, errors={}, labels=LABELS)

    @post("/", name="people-create")
    async def create(self, request: Request, data: Form) -> Response:
        """Create a person; on bad input the form comes back with every problem named and nothing lost."""
        try:
            person_id = await people.create_person(request.user, data)
        except Invalid as exc:
            return render(request, "backoffice/person_form.html", person=None, values=data, errors=exc.errors,
                          labels=LABELS, status_code=422)
        return Redirect(f"/people/{person_id}?created=1", status_code=303)

    @get("/{person_id:str}", name="people-detail")
    async def detail(self, request: Request, person_id: str, created: str | None = None,
                     saved: str | None = None) -> Response:
        """One person, their notes, and the Reveal control for masked fields."""
        return await self._detail(request, person_id, flash="Person created." if created else
                                  "Changes saved." if saved else None)

    async def _detail(self, request: Request, person_id: str, status_code: int = 200, **extra: Any) -> Response:
        pid = people.parse_id(person_id)
        person, notes, notes_denied = await people.person_with_notes(request.user, pid)
        return render(request, "backoffice/person.html", person=person, notes=notes, notes_denied=notes_denied,
                      labels=LABELS, reasons=people.reveal_reasons(), status_code=status_code, **extra)

    @get("/{person_id:str}/edit", name="people-edit")
    async def edit_form(self, request: Request, person_id: str) -> Response:
        """The edit form, holding the current values of fields this role may change."""
        person = await people.get_person(request.user, people.parse_id(person_id))
        values = {k: v for k, v in person.values.items() if person.effects.get(k) == "allow"}
        return render(request, "backoffice/person_form.html", person=person, values=values, errors={},
                      labels=LABELS)

    @post("/{person_id:str}/edit", name="people-update")
    async def update(self, request: Request, person_id: str, data: Form) -> Response:
        """Save the changed fields; an invalid form comes back with the input kept."""
        pid = people.parse_id(person_id)
        try:
            await people.update_person(request.user, pid, data)
        except Invalid as exc:
            person = await people.get_person(request.user, pid)
            return render(request, "backoffice/person_form.html", person=person, values=data, errors=exc.errors,
                          labels=LABELS, status_code=422)
        return Redirect(f"/people/{pid}?saved=1", status_code=303)

    @post("/{person_id:str}/notes", name="people-add-note")
    async def add_note(self, request: Request, person_id: str, data: Form) -> Response:
        """Add a note; it is encrypted with the person's key."""
        pid = people.parse_id(person_id)
        try:
            await people.add_note(request.user, pid, data.get("body", ""))
        except Invalid as exc:
            return await self._detail(request, person_id, status_code=422, note_errors=exc.errors,
                                      note_body=data.get("body", ""))
        return Redirect(f"/people/{pid}#notes", status_code=303)

    @post("/{person_id:str}/reveal", name="people-reveal")
    async def reveal(self, request: Request, person_id: str, data: Form) -> Response:
        """Show one masked value after a reason is chosen; the reason (and ticket) go into the audit, an
        optional note goes in sealed under the person's key."""
        pid = people.parse_id(person_id)
        field = data.get("field", "")
        given = {k: data.get(k, "") for k in REVEAL_INPUT}
        try:
            value = await people.reveal(request.user, pid, field, given["reason_code"], ticket=given["ticket"],
                                        note=given["note"])
        except Invalid as exc:
            if is_fragment_request(request):
                return render(request, "backoffice/person.html", block="reveal", field=field, person_id=pid,
                              reasons=people.reveal_reasons(), labels=LABELS, reveal_errors=exc.errors,
                              reveal_values=given, status_code=422)
            return await self._detail(request, person_id, status_code=422, reveal_errors=exc.errors,
                                      reveal_field=field, reveal_values=given)
        if is_fragment_request(request):
            return render(request, "backoffice/person.html", block="revealed", field=field, value=value,
                          labels=LABELS)
        # The reveal lasts a few minutes for this member of staff: the person page now shows it.
        return Redirect(f"/people/{pid}#reveal-{field}", status_code=303)

    @post("/{person_id:str}/erase", name="people-erase")
    async def erase(self, request: Request, person_id: str, data: Form) -> Response:
        """Erase a person for good (crypto-shredding); the word ERASE must be typed to confirm."""
        pid = people.parse_id(person_id)
        if data.get("confirm", "").strip().casefold() != "erase":
            return await self._detail(request, person_id, status_code=422, erase_errors={
                "confirm": "type ERASE to confirm; erasure cannot be undone"})
        await people.erase_person(request.user, pid)
        return Redirect("/people?erased=1", status_code=303)
