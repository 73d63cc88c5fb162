"""The audit console and access log over HTTP: filters, the person filter by email, keyset pages, exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import urllib.parse

import httpx

from server.actor import Actor
from server.audit.chain import Entry, append_many
from server.audit.tables import AuditEvent
from server.kernel import get_kernel
from tests.faces._client import (
    CUSTOMER_PASSWORD,
    STAFF_PASSWORD,
    Client,
    Customer,
    events_since,
    face_client,
    last_seq,
    links_of,
    make_customer,
    make_staff,
    post_form,
    pseudonym_of,
    signed_in,
    summary,
)
from tests.support import ERIKA, MAX

ROW_RE = re.compile(r"<tr>\s*(<td>\d+</td>.*?)</tr>", re.DOTALL)
CELL_RE = re.compile(r"<td>(.*?)</td>", re.DOTALL)
SUPPORT = Actor(kind="staff", id="support-account-1", face="backoffice", roles=frozenset({"support"}))
SALES = Actor(kind="staff", id="sales-account-2", face="backoffice", roles=frozenset({"sales"}))


def rows_of(html: str) -> list[tuple[int, str]]:
    """(seq, action) of every event row in the console's table, top to bottom."""
    found = []
    for row in ROW_RE.findall(html):
        cells = CELL_RE.findall(row)
        found.append((int(cells[0]), cells[5]))
    return found


async def record(*events: tuple[Actor, Entry]) -> None:
    await append_many(list(events), get_kernel().policies.version)


async def people() -> tuple[Customer, str, str]:
    erika, max_ = await make_customer(ERIKA), await make_customer(MAX)
    return erika, await pseudonym_of(erika.person_id), await pseudonym_of(max_.person_id)


async def seed_events() -> tuple[str, str]:
    """Support reads Erika and Max for customer service; sales updates Max; returns both pseudonyms."""
    _, erika, max_ = await people()
    await record(
        (SUPPORT, Entry("read", "crm_person", "customer_service", subjects=(erika,))),
        (SUPPORT, Entry("read", "crm_person", "customer_service", subjects=(max_,))),
        (SALES, Entry("update", "crm_person", "sales", subjects=(max_,), fields={"phone": "allow"})),
    )
    return erika, max_


async def compliance(client: Client) -> str:
    await make_staff("compliance", "compliance")
    return await signed_in(client, "compliance", STAFF_PASSWORD)


def assert_no_email_in_urls(response: httpx.Response, email: str) -> None:
    quoted = urllib.parse.quote(email), urllib.parse.quote_plus(email)
    for url in [str(response.url), response.headers.get("location", ""), *links_of(response.text)]:
        assert email not in url and not any(q in url for q in quoted), url


async def test_filtering_by_action_shows_only_events_of_that_action(db: None) -> None:
    await seed_events()
    async with face_client("backoffice") as client:
        await compliance(client)
        everything = rows_of((await client.get("/audit")).text)
        updates = rows_of((await client.get("/audit", params={"action": "update"})).text)
    assert {action for _, action in everything} > {"update"}
    assert updates and {action for _, action in updates} == {"update"}


async def test_filtering_by_actor_and_purpose_narrows_the_events_to_that_actor_and_purpose(db: None) -> None:
    await seed_events()
    async with face_client("backoffice") as client:
        await compliance(client)
        by_support = rows_of((await client.get("/audit", params={"actor": SUPPORT.id})).text)
        for_sales = rows_of((await client.get("/audit", params={"purpose": "sales"})).text)
    assert [action for _, action in by_support] == ["read", "read"]
    assert [action for _, action in for_sales] == ["update"]


async def test_a_date_range_keeps_todays_events_and_drops_the_rest(db: None) -> None:
    await seed_events()
    today = dt.datetime.now(dt.UTC).date()
    async with face_client("backoffice") as client:
        await compliance(client)
        todays = rows_of((await client.get("/audit", params={"from": str(today), "to": str(today)})).text)
        later = rows_of((await client.get("/audit", params={"from": str(today + dt.timedelta(days=1))})).text)
        earlier = rows_of((await client.get("/audit", params={"to": str(today - dt.timedelta(days=1))})).text)
    assert len(todays) >= 3
    assert later == [] and earlier == []


async def test_a_bad_date_is_named_and_nothing_is_shown(db: None) -> None:
    await seed_events()
    async with face_client("backoffice") as client:
        await compliance(client)
        response = await client.get("/audit", params={"from": "yesterday"})
    assert response.status_code == 422
    assert "is not a date; use YYYY-MM-DD" in response.text
    assert rows_of(response.text) == []


async def test_the_person_filter_finds_that_persons_events_by_email_and_keeps_the_email_out_of_every_url(
        db: None) -> None:
    erika, _ = await seed_events()
    async with face_client("backoffice") as client:
        csrf = await compliance(client)
        before = await last_seq()
        response = await post_form(client, "/audit/search", {"person": ERIKA["email"]}, csrf)
        recorded = await events_since(before)
    assert response.status_code == 200
    # Every event naming her, the console's own search included; the view is recorded after the page was read.
    erikas = [int(r["seq"]) for r in await AuditEvent.select(AuditEvent.seq, AuditEvent.subjects)
              .where(AuditEvent.seq <= before + 1) if erika in json.loads(r["subjects"])]
    assert sorted(seq for seq, _ in rows_of(response.text)) == sorted(erikas)
    assert len(erikas) >= 3  # her account's creation, support's read and the search
    assert_no_email_in_urls(response, ERIKA["email"])
    assert summary(recorded) == [("search", "crm_person", "ok"), ("view", "audit_event", "ok")]
    assert recorded[1].subjects == [erika]


async def test_an_email_nobody_has_shows_no_events(db: None) -> None:
    await seed_events()
    async with face_client("backoffice") as client:
        csrf = await compliance(client)
        response = await post_form(client, "/audit/search", {"person": "nobody@example.org"}, csrf)
    assert response.status_code == 200
    assert "Nobody has this email address" in response.text
    assert rows_of(response.text) == []


async def test_pages_are_keyset_paged_newest_first_and_the_older_link_keeps_the_filters(db: None) -> None:
    _, erika, _ = await people()
    await record(*[(SUPPORT, Entry("read", "crm_person", "customer_service", subjects=(erika,)))
                   for _ in range(120)])
    async with face_client("backoffice") as client:
        await compliance(client)
        first = await client.get("/audit", params={"action": "read"})
        older = [link for link in links_of(first.text) if "before=" in link]
        second = await client.get(older[0].replace("&amp;", "&"))
    page1, page2 = rows_of(first.text), rows_of(second.text)
    assert len(older) == 1 and "action=read" in older[0]
    assert len(page1) == 50 and len(page2) == 50
    assert [s for s, _ in page1] == sorted((s for s, _ in page1), reverse=True)
    assert max(s for s, _ in page2) == min(s for s, _ in page1) - 1
    assert {a for _, a in page1 + page2} == {"read"}


async def test_with_a_person_filter_older_events_are_asked_for_by_a_form_not_a_link(db: None) -> None:
    _, erika, _ = await people()
    await record(*[(SUPPORT, Entry("read", "crm_person", "customer_service", subjects=(erika,)))
                   for _ in range(60)])
    async with face_client("backoffice") as client:
        csrf = await compliance(client)
        first = await post_form(client, "/audit/search", {"person": ERIKA["email"]}, csrf)
        page1 = rows_of(first.text)
        second = await post_form(client, "/audit/search",
                                 {"person": ERIKA["email"], "before": str(page1[-1][0])}, csrf)
    page2 = rows_of(second.text)
    assert len(page1) == 50
    assert f'name="before" value="{page1[-1][0]}"' in first.text
    assert_no_email_in_urls(first, ERIKA["email"])
    assert page2 and all(seq < page1[-1][0] for seq, _ in page2)
    assert page2[-1] == (1, "create")  # down to her record's creation, the first event


async def test_the_jsonl_export_is_an_attachment_of_the_filtered_events_in_ascending_order(db: None) -> None:
    await seed_events()
    async with face_client("backoffice") as client:
        await compliance(client)
        response = await client.get("/audit/export", params={"format": "jsonl", "action": "read"})
    today = dt.datetime.now(dt.UTC).date()
    assert response.status_code == 200
    assert response.headers["content-disposition"] == f'attachment; filename="mutual-audit-{today}.jsonl"'
    lines = [json.loads(line) for line in response.text.splitlines()]
    header, events, last = lines[0], [e for e in lines[1:-1] if e["kind"] == "event"], lines[-1]
    assert header["kind"] == "header" and header["format"] == "mutual-audit-export/2"
    assert header["filters"] == {"action": "read"}
    assert header["policy_version"] == get_kernel().policies.version
    assert [e["action"] for e in events] == ["read", "read"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert last["kind"] == "end" and isinstance(last["checkpoints"], list) and "signature" in last["head"]
    assert all(e["kind"] in ("event", "omitted") for e in lines[1:-1])  # what the filter left out, proved


async def test_the_csv_export_has_a_header_row_and_one_row_per_event(db: None) -> None:
    await seed_events()
    async with face_client("backoffice") as client:
        await compliance(client)
        response = await client.get("/audit/export", params={"format": "csv", "purpose": "sales"})
    assert response.status_code == 200
    assert response.headers["content-disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["action"], r["purpose"], r["fields"]) for r in rows] == [("update", "sales", '{"phone": "allow"}')]
    assert len(rows[0]["hash"]) == 64


async def test_the_export_is_recorded_with_the_persons_pseudonym_and_never_the_email(db: None) -> None:
    erika, max_ = await seed_events()
    async with face_client("backoffice") as client:
        csrf = await compliance(client)
        before = await last_seq()
        response = await post_form(client, "/audit/export", {"person": ERIKA["email"], "format": "jsonl"}, csrf)
        recorded = await events_since(before)
    events = [e for e in map(json.loads, response.text.splitlines()) if e["kind"] == "event"]
    assert response.status_code == 200
    assert summary(recorded) == [("search", "crm_person", "ok"), ("export", "audit_event", "ok")]
    export = recorded[1]
    assert export.subjects == [erika] and export.purpose == "compliance_audit"
    assert export.fields["format"] == "jsonl"
    stored = json.dumps(await AuditEvent.select(), default=str)
    assert ERIKA["email"] not in stored and "erika.mustermann" not in stored
    assert events and all(erika in json.loads(e["subjects"]) for e in events)
    assert not any(max_ in e["subjects"] for e in events)
    assert_no_email_in_urls(response, ERIKA["email"])


async def test_an_unknown_export_format_is_refused_and_nothing_is_recorded(db: None) -> None:
    async with face_client("backoffice") as client:
        await compliance(client)
        before = await last_seq()
        response = await client.get("/audit/export", params={"format": "xlsx"})
        assert await events_since(before) == []
    assert response.status_code == 422
    assert "unknown format &#39;xlsx&#39;; use one of: csv, jsonl" in response.text


async def test_a_customer_filters_their_access_log_and_sees_only_their_own_events(db: None) -> None:
    await seed_events()
    async with face_client("portal") as client:
        await signed_in(client, ERIKA["email"], CUSTOMER_PASSWORD)
        await client.get("/profile")  # she reads her own data: an event for self-service
        everything = await client.get("/access")
        reads = await client.get("/access", params={"action": "read", "purpose": "customer_service"})
        updates = await client.get("/access", params={"action": "update"})
    assert "<td>You</td>" in everything.text and "<td>Staff (support)</td>" in everything.text
    assert everything.text.count("<td>viewed</td>") == 2
    assert reads.text.count("<td>viewed</td>") == 1 and "<td>You</td>" not in reads.text
    assert "Nothing matches these filters." in updates.text  # Max's update is not hers
    assert "support-account-1" not in everything.text  # the role, never who exactly


async def test_a_customer_downloads_their_filtered_access_log_and_nothing_is_recorded(db: None) -> None:
    await seed_events()
    async with face_client("portal") as client:
        await signed_in(client, ERIKA["email"], CUSTOMER_PASSWORD)
        await client.get("/profile")
        page = await client.get("/access", params={"action": "read", "purpose": "customer_service"})
        link = next(u for u in links_of(page.text) if "format=json" in u).replace("&amp;", "&")
        before = await last_seq()
        as_json = await client.get(link)
        as_csv = await client.get("/access/download", params={"format": "csv"})
        assert await events_since(before) == []
    assert as_json.headers["content-disposition"].startswith('attachment; filename="mutual-access-log-')
    log = json.loads(as_json.text)
    assert log["filters"] == {"action": "read", "purpose": "customer_service"}
    assert [(e["who"], e["action"], e["purpose"]) for e in log["events"]] == [
        ("Staff (support)", "read", "customer_service")]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["who"] for r in rows} >= {"You", "Staff (support)"}
    assert "support-account-1" not in as_csv.text


async def test_another_customer_sees_nothing_of_erika_in_their_log_or_download(db: None) -> None:
    erika, _ = await seed_events()
    async with face_client("portal") as client:
        await signed_in(client, MAX["email"], CUSTOMER_PASSWORD)
        page = await client.get("/access")
        download = await client.get("/access/download", params={"format": "json"})
    assert "Staff (sales)" in page.text
    events = json.loads(download.text)["events"]
    assert len(events) >= 3  # his account's creation, support's read and sales' update
    assert erika not in download.text and "Erika" not in page.text + download.text
