"""The compliance role's record of processing over HTTP: the page, both download formats, bad formats."""

from __future__ import annotations

import csv
import io
import json

from server.kernel import get_kernel
from tests.faces._client import (
    STAFF_PASSWORD,
    Client,
    events_since,
    face_client,
    last_seq,
    links_of,
    make_staff,
    signed_in,
    summary,
)

DOWNLOAD = "/records/download"


async def _compliance(client: Client) -> None:
    await make_staff("compliance", "compliance")
    await signed_in(client, "compliance", STAFF_PASSWORD)


async def test_the_page_lists_every_purpose_and_links_both_downloads(db: None) -> None:
    async with face_client("backoffice") as client:
        await _compliance(client)
        page = await client.get("/records")
    assert page.status_code == 200
    for purpose in get_kernel().policies.purposes.values():
        assert f'id="purpose-{purpose.id}"' in page.text
        assert purpose.title_en in page.text
    assert f"{DOWNLOAD}?format=json" in links_of(page.text)
    assert f"{DOWNLOAD}?format=csv" in links_of(page.text)
    assert '<th scope="row">contact.email</th>' in page.text


async def test_the_json_download_is_an_attachment_holding_the_record_of_the_running_policies(db: None) -> None:
    async with face_client("backoffice") as client:
        await _compliance(client)
        before = await last_seq()
        response = await client.get(DOWNLOAD, params={"format": "json"})
        events = await events_since(before)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"] == 'attachment; filename="mutual-record-of-processing.json"'
    record = json.loads(response.text)
    assert record["generated_from"] == get_kernel().policies.version
    assert [a["id"] for a in record["activities"]] == list(get_kernel().policies.purposes)
    assert summary(events) == [("export", "processing_record", "ok")]
    assert events[0].purpose == "compliance_audit"


async def test_the_csv_download_is_an_attachment_with_a_header_row(db: None) -> None:
    async with face_client("backoffice") as client:
        await _compliance(client)
        response = await client.get(DOWNLOAD, params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="mutual-record-of-processing.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["purpose"] for row in rows} == set(get_kernel().policies.purposes)
    assert any(row["purpose"] == "sales" and row["category"] == "contact.email" for row in rows)


async def test_an_unknown_format_is_refused_with_422_naming_the_formats_and_nothing_is_recorded(
        db: None) -> None:
    async with face_client("backoffice") as client:
        await _compliance(client)
        before = await last_seq()
        response = await client.get(DOWNLOAD, params={"format": "xlsx"})
        events = await events_since(before)
    assert response.status_code == 422
    assert "content-disposition" not in response.headers
    assert "unknown format &#39;xlsx&#39;; use one of: json, csv" in response.text
    assert events == []
