"""Lists and searches open each row only as far as that person's own relation to the viewer allows,
and a search names every person it decrypted, the candidates it rejected included."""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from server import gateway, kernel
from server.actor import Actor
from server.audit import service as audit
from server.db import raw
from server.gateway import decide, reads, spec
from server.policy import load_policies
from server.settings import REPO_ROOT
from tests.support import ERIKA, MAX, customer, staff

PURPOSE = "customer_service"
# Support sees names across its team, but the email only of the people a member of support owns.
TEAM_CONTACT = "    categories: [identity, contact]\n    effect: allow\n    scope: team\n"
OWN_EMAIL_RULE = """
  - id: support-read-own-email
    description: Support read the email of the people they own.
    roles: [support]
    actions: [read]
    purposes: [customer_service]
    tables: [crm_person]
    fields: [email]
    effect: allow
    scope: assigned
    priority: 10
"""


def _email_only_for_own_people(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    access = (policies / "access.yml").read_text()
    assert access.count(TEAM_CONTACT) == 1, "the support team rule changed; update this test's policy"
    access = access.replace(TEAM_CONTACT, TEAM_CONTACT.replace("identity, contact", "identity")) + OWN_EMAIL_RULE
    (policies / "access.yml").write_text(access)
    loaded = kernel.Kernel(policies=load_policies(policies), keys=kernel.get_kernel().keys)
    for module in (decide, reads, spec):
        monkeypatch.setattr(module, "get_kernel", lambda: loaded)


async def _team_north_with_one_own_person() -> tuple[Actor, uuid.UUID, uuid.UUID]:
    """Erika and Max, both served by team north; the member of support owns Erika only."""
    viewer = dataclasses.replace(staff("support"), team="north")
    admin = dataclasses.replace(staff("admin"), team="north")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    max_ = await gateway.create_person(admin, purpose=PURPOSE, values=MAX)
    await raw("UPDATE crm_person SET owner_id = {} WHERE id = {}", uuid.UUID(viewer.id), erika)
    return viewer, erika, max_


async def test_a_page_shows_a_field_only_on_the_row_whose_relation_grants_it_not_on_the_whole_page(
        db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    viewer, erika, max_ = await _team_north_with_one_own_person()
    _email_only_for_own_people(tmp_path, monkeypatch)
    page = {r.id: r for r in (await gateway.list_people(viewer, purpose=PURPOSE)).items}
    found = {r.id: r for r in await gateway.find_people(viewer, purpose=PURPOSE, field="name", query="mustermann")}
    for shown in (page, found):
        assert set(shown) == {erika, max_}
        assert shown[erika]["email"] == ERIKA["email"] and shown[erika]["family_name"] == "Mustermann"
        assert shown[max_]["family_name"] == "Mustermann"
        assert "email" not in shown[max_].values and shown[max_].effects["email"] == "deny"
    listed = (await raw("SELECT fields FROM audit_event WHERE action = 'list'"))[0]
    assert json.loads(listed["fields"])["email"] == "allow by support-read-own-email | deny by default-deny"


async def _events_since(seq: int) -> list[dict[str, Any]]:
    return await raw("SELECT * FROM audit_event WHERE seq > {} ORDER BY seq", seq)


async def _pseudonym(person_id: uuid.UUID) -> str:
    return str((await raw("SELECT pseudonym FROM crm_person WHERE id = {}", person_id))[0]["pseudonym"])


async def test_a_search_candidate_decrypted_and_rejected_is_named_in_the_audit_and_sees_it_in_their_log(
        db: None) -> None:
    admin = staff("admin")
    erika = await gateway.create_person(admin, purpose=PURPOSE, values=ERIKA)
    max_ = await gateway.create_person(admin, purpose=PURPOSE, values=MAX)
    # A blind-index collision, whatever the index width: Max's email index now equals Erika's.
    await raw("UPDATE crm_person SET email_index = (SELECT email_index FROM crm_person WHERE id = {}) "
              "WHERE id = {}", erika, max_)
    before = int((await raw("SELECT seq FROM audit_head"))[0]["seq"])
    found = await gateway.find_people(admin, purpose=PURPOSE, field="email", query=ERIKA["email"])
    assert [r.id for r in found] == [erika]
    events = await _events_since(before)
    assert [(e["action"], e["outcome"]) for e in events] == [("search", "ok"), ("search", "rejected")]
    assert json.loads(events[0]["subjects"]) == [await _pseudonym(erika)]
    assert json.loads(events[1]["subjects"]) == [await _pseudonym(max_)]
    assert set(json.loads(events[1]["fields"])) == {"email_index", "email"}, "it names the field decrypted"
    assert events[0]["request_id"] == events[1]["request_id"]
    max_log = await audit.my_access_log(customer(max_))
    assert ("search", "rejected") in [(e.action, e.outcome) for e in max_log]
