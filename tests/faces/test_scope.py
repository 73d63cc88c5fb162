"""Staff out of scope: a sales rep sees only the people they own, over HTTP as in the gateway."""

from __future__ import annotations

from tests.faces._client import (
    STAFF_PASSWORD,
    events_since,
    face_client,
    last_seq,
    make_person,
    make_staff,
    post_form,
    signed_in,
    summary,
)
from tests.support import ERIKA, MAX


async def test_a_sales_rep_lists_searches_and_opens_only_their_own_people(db: None) -> None:
    await make_staff("rep", "sales", team="north")
    not_theirs = await make_person(MAX)  # created by the system: nobody's
    async with face_client("backoffice") as client:
        csrf = await signed_in(client, "rep", STAFF_PASSWORD)
        created = await post_form(client, "/people", dict(ERIKA), csrf)
        assert created.status_code == 303
        theirs = created.headers["location"].split("?")[0].rsplit("/", 1)[1]
        listing = await client.get("/people")
        found = await post_form(client, "/people/search", {"query": "mustermann"}, csrf)
        before = await last_seq()
        refused = await client.get(f"/people/{not_theirs}")
        events = await events_since(before)
        own = await client.get(f"/people/{theirs}")
    assert f"/people/{theirs}" in listing.text and f"/people/{not_theirs}" not in listing.text
    assert f"/people/{theirs}" in found.text and f"/people/{not_theirs}" not in found.text
    assert refused.status_code == 403 and "Max" not in refused.text
    assert summary(events) == [("read", "crm_person", "denied")]
    assert own.status_code == 200 and "Erika" in own.text
