"""The compliance role's audit console: filters, keyset pages and streamed exports."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Stream

from server.audit import service as audit
from server.crm import service as crm
from server.errors import Invalid
from server.web import render, requires_role

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
FILTERS = ("from", "to", "actor", "action", "purpose")
LABELS = {"from": "From", "to": "To", "actor": "Actor id", "action": "Action", "purpose": "Purpose",
          "person": "Person's email"}


def _query_filters(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "") for k in FILTERS}


def _before(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise Invalid({"before": f"'{text[:20]}' is not an event number"}) from None


def _stream(export: audit.AuditExport) -> Stream:
    return Stream(export.chunks, media_type=export.media_type,
                  headers={"content-disposition": f'attachment; filename="{export.filename}"'})


class AuditController(Controller):
    path = "/audit"
    guards = [requires_role("compliance")]

    async def _page(self, request: Request, values: dict[str, str], person: str = "",
                    before: int | None = None) -> Response:
        try:
            filters = audit.AuditFilters.parse(values)
        except Invalid as exc:
            return await self._show(request, values, person, [], exc.errors, status_code=422)
        subjects = await audit.find_subjects(request.user, person) if person.strip() else None
        events = await audit.list_events(request.user, filters=filters, subjects=subjects, before=before)
        return await self._show(request, {**values, **filters.as_params()}, person, events, {},
                                params=filters.as_params(), person_found=subjects is None or bool(subjects.pseudonyms))

    async def _show(self, request: Request, values: dict[str, str], person: str, events: list[audit.EventView],
                    errors: dict[str, str], status_code: int = 200, params: dict[str, str] | None = None,
                    person_found: bool = True) -> Response:
        verified = await audit.verify(request.user)
        reasons = crm.describe_reasons(e.reason for e in events)
        return render(request, "backoffice/audit.html", events=events, verified=verified, values=values,
                      reasons=reasons, person=person, errors=errors, params=params or {}, person_found=person_found,
                      labels=LABELS, actions=audit.ACTIONS, purposes=audit.purposes(), status_code=status_code)

    @get("/", name="audit-list")
    async def list_events(self, request: Request, before: str | None = None) -> Response:
        """A page of events, newest first, filtered by the non-personal filters in the query."""
        return await self._page(request, _query_filters(request), before=_before(before))

    @post("/search", name="audit-search")
    async def search(self, request: Request, data: Form) -> Response:
        """The same page, filtered also by a person's email, which stays out of every URL."""
        return await self._page(request, {k: data.get(k, "") for k in FILTERS}, data.get("person", ""),
                                _before(data.get("before")))

    @get("/export", name="audit-export")
    async def export(self, request: Request,
                     file_format: Annotated[str, QueryParameter(name="format")] = "jsonl") -> Stream:
        """The filtered events as ?format=csv or ?format=jsonl, streamed; the export is recorded."""
        filters = audit.AuditFilters.parse(_query_filters(request))
        return _stream(await audit.export_events(request.user, file_format, filters=filters))

    @post("/export", name="audit-export-person", status_code=200)
    async def export_person(self, request: Request, data: Form) -> Stream:
        """The export with the person filter: the email comes in the form body, never in the URL."""
        filters = audit.AuditFilters.parse({k: data.get(k, "") for k in FILTERS})
        person = data.get("person", "")
        subjects = await audit.find_subjects(request.user, person) if person.strip() else None
        return _stream(await audit.export_events(request.user, data.get("format", "jsonl"), filters=filters,
                                                 subjects=subjects))
