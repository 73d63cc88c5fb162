"""The customer's access log shows staff handles only where policy allows; by default, roles."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from server import gateway, kernel
from server.audit import service
from server.identity.service import create_staff, customer_actor
from server.policy import load_policies
from server.settings import REPO_ROOT
from tests.support import ERIKA, staff

NAMES_RULE = """
  - id: customers-see-staff-handles
    description: Customers see the handle of the staff member who accessed their data.
    roles: [customer]
    actions: [read]
    purposes: [self_service]
    tables: [identity_staff_account]
    fields: [username]
    effect: allow
    scope: self
    priority: 10
"""


async def _erika_read_by_staff() -> tuple[object, str]:
    staff_id = await create_staff("jana", "staff-password-for-tests", ["admin"])
    admin = dataclasses.replace(staff("admin"), id=str(staff_id))
    pid = await gateway.create_person(admin, purpose="customer_service", values=ERIKA)
    await gateway.get_person(admin, purpose="customer_service", person_id=pid)
    return customer_actor({"id": staff_id, "person_id": pid}, "req"), str(staff_id)


async def test_by_default_the_customer_sees_the_role_and_not_the_name(db: None) -> None:
    erika, _ = await _erika_read_by_staff()
    events = await service.my_access_log(erika)  # type: ignore[arg-type]
    staff_events = [e for e in events if e.actor_kind == "staff"]
    assert staff_events and all(e.actor_name == "" for e in staff_events)


async def test_a_policy_rule_lets_the_customer_see_the_staff_handle(
        db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    erika, _ = await _erika_read_by_staff()
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    (policies / "access.yml").write_text((policies / "access.yml").read_text() + NAMES_RULE)
    loaded = kernel.Kernel(policies=load_policies(policies), keys=kernel.get_kernel().keys)
    monkeypatch.setattr(service, "get_kernel", lambda: loaded)
    events = await service.my_access_log(erika)  # type: ignore[arg-type]
    assert {e.actor_name for e in events if e.actor_kind == "staff"} == {"jana"}
