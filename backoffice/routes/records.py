"""The compliance role's record of processing activities (GDPR Art. 30): the page and its downloads."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get
from litestar.params import QueryParameter

from server import compliance
from server.web import render, requires_role


class RecordsController(Controller):
    path = "/records"
    guards = [requires_role("compliance")]

    @get("/", name="records-page")
    async def show(self, request: Request) -> Response:
        """The record, generated from the running policies; viewing it is recorded."""
        record = await compliance.processing_record_for(request.user)
        return render(request, "backoffice/records.html", record=record)

    @get("/download", name="records-download")
    async def download(self, request: Request,
                       file_format: Annotated[str, QueryParameter(name="format")] = "json") -> Response:
        """The record as an attachment: ?format=json (the default) or ?format=csv; the export is recorded."""
        file = await compliance.processing_record_download(request.user, file_format)
        return Response(file.content, media_type=file.media_type,
                        headers={"content-disposition": f'attachment; filename="{file.filename}"'})
