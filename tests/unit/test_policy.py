"""The policy package: loading, validation messages, decisions, masks and the golden examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.policy import FieldSpec, PolicyError, PolicySet, load_policies
from server.policy.engine import MASKS

POLICIES = Path(__file__).resolve().parents[2] / "policies"
EXAMPLES: list[dict[str, Any]] = [
    example
    for path in sorted((POLICIES / "examples").glob("*.yml"))
    for example in yaml.safe_load(path.read_text(encoding="utf-8"))
]


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(POLICIES)


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(POLICIES, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_the_real_policies_load(policies: PolicySet) -> None:
    assert {"crm_person", "crm_note", "audit_event", "identity_session"} <= policies.tables
    assert policies.fields("crm_person")["birth_date"] == FieldSpec(
        "identity.birth_date", "high", encrypted=True, searchable=False, mask="year_only",
        retention="sensitive-identity")
    assert policies.retention["audit-trail"].keep_days == 6 * 365
    assert policies.fields("crm_note")["body"].mask == "redact"
    assert policies.purposes["self_service"].legal_basis == "contract"
    assert len(policies.version) == 64


def test_the_version_changes_when_a_policy_file_changes(tmp_path: Path,
                                                        policies: PolicySet) -> None:
    copy = _copy(tmp_path)
    assert load_policies(copy).version == policies.version
    with (copy / "purposes.yml").open("a", encoding="utf-8") as file:
        file.write("# reviewed\n")
    assert load_policies(copy).version != policies.version


ROLES = "known roles: admin, compliance, sales, support, customer"
BROKEN = {
    # case: (file, anchor, old, new, text on the line to report, expected problem)
    "unknown role": ("access.yml", "id: sales-read-people", "roles: [sales]", "roles: [saels]",
                     "[saels]", f"unknown role 'saels'; {ROLES}"),
    "bad effect": ("access.yml", "id: sales-read-people", "effect: allow", "effect: permit",
                   "permit", "bad value 'permit' for rules[6].effect; use one of: allow, mask"),
    "missing key": ("access.yml", "id: sales-read-people", "    effect: allow\n", "",
                    "id: sales-read-people", "missing key 'effect' in rules[6]"),
    "unknown field in rule": ("access.yml", "id: staff-reveal-birth-date", "[birth_date]",
                              "[birth_day]", "birth_day", "unknown field 'birth_day'"),
    "unknown purpose in rule": ("access.yml", "id: sales-read-people", "[sales, ", "[sails, ",
                                "[sails", "unknown purpose 'sails'"),
    "duplicate rule id": ("access.yml", "id: sales-write-people", "sales-write-people",
                          "sales-read-people", "read-people\n    description: Sales change",
                          "duplicate rule id 'sales-read-people'"),
    "bad sensitivity": ("fields.yml", "birth_date:", "sensitivity: high", "sensitivity: secret",
                        "secret", "bad value 'secret' for tables.crm_person.birth_date"),
    "duplicate reveal reason": ("purposes.yml", "id: identity_check", "id: identity_check",
                                "id: customer_request", "id: customer_request\n    title: {de: Ident",
                                "duplicate reveal reason id 'customer_request'"),
    "reveal reason that could hold a sentence": ("purposes.yml", "id: support_case", "id: support_case",
                                                 "id: Support case", "Support case",
                                                 "reveal_reasons[4].id: 'Support case' does not match"),
    "subject table that is none": ("fields.yml", "  crm_note:", "subject: crm_person", "subject: crm_notes",
                                   "subject: crm_notes", "crm_note.person names subject table 'crm_notes'"),
    "pseudonym off the subject table": ("fields.yml", "  crm_note:", "retention: contact-notes}",
                                        "retention: contact-notes, pseudonym: true}", "contact-notes, pseudonym",
                                        "crm_note.body has pseudonym but crm_note is not a subject table"),
    "index on a clear column": ("fields.yml", "  crm_person:", "retention: customer-record, subject: self}",
                                "retention: customer-record, subject: self, index: email}", "self, index: email",
                                "crm_person.id has index: email but is not encrypted"),
    "blind index of nothing": ("fields.yml", "  crm_person:", "index_of: phone", "index_of: fax",
                               "index_of: fax", "crm_person.phone_index has index_of: fax"),
    "YAML syntax error": ("purposes.yml", "id: sales", "description: Preparing",
                          "description: Prep: x", "Prep: x",
                          "YAML syntax error: mapping values are not allowed here"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_an_invalid_policy_names_the_file_and_the_line(tmp_path: Path, case: str) -> None:
    name, anchor, old, new, marker, problem = BROKEN[case]
    path = _copy(tmp_path) / name
    text = path.read_text(encoding="utf-8")
    at = text.index(old, text.index(anchor))
    text = text[:at] + new + text[at + len(old):]
    path.write_text(text, encoding="utf-8")
    line = text[: text.index(marker)].count("\n") + 1
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert str(caught.value).startswith(f"policy {name} line {line}: {problem}")
    assert (caught.value.file, caught.value.line) == (name, line)


@pytest.mark.parametrize(("field", "value", "masked"), [
    ("email", "ada@example.org", "•••@example.org"),
    ("phone", "+44 20 7946 0958", "•••0958"),
    ("birth_date", "1815-12-10", "1815-••-••"),
    ("given_name", "Ada", "•••••"),
    ("birth_date", "unknown", "•••••"),
    ("email", "no-at-sign", "•••••"),
    ("phone", "112", "•••••"),
    ("shoe_size", "42", "•••••"),
])
def test_masks_keep_only_what_the_strategy_allows(policies: PolicySet, field: str, value: str,
                                                  masked: str) -> None:
    assert policies.mask("crm_person", field, value) == masked


def test_every_mask_in_the_schema_is_implemented() -> None:
    schema = json.loads((POLICIES / "schema" / "fields.schema.json").read_text(encoding="utf-8"))
    assert set(schema["$defs"]["field"]["properties"]["mask"]["enum"]) == set(MASKS)


def test_anything_unknown_is_denied_by_default(policies: PolicySet) -> None:
    ask = {"roles": frozenset({"admin"}), "is_self": False, "action": "read"}
    unknown = [("curiosity", "crm_person", "email"), ("sales", "crm_secrets", "email"),
               ("sales", "crm_person", "iban")]
    for purpose, table, field in unknown:
        decision = policies.decide(**ask, purpose=purpose, table=table, fields=[field])[field]
        assert (decision.effect, decision.rule) == ("deny", "default-deny")


def test_the_golden_example_names_are_unique() -> None:
    names = [example["name"] for example in EXAMPLES]
    assert len(names) == len(set(names)) >= 10


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["name"] for example in EXAMPLES])
def test_each_golden_example_decides_as_written(policies: PolicySet,
                                                example: dict[str, Any]) -> None:
    decisions = policies.decide(
        roles=frozenset(example["roles"]), is_self=example["is_self"], action=example["action"],
        purpose=example["purpose"], table=example["table"], fields=example["expect"],
        relations=frozenset(example.get("relations", ())),
    )
    assert {f: f"{d.effect} by {d.rule}" for f, d in decisions.items()} == example["expect"]


def test_reach_tells_which_records_a_role_may_read(policies: PolicySet) -> None:
    def reach(role: str, purpose: str = "customer_service") -> frozenset[str]:
        return policies.reach(roles=frozenset({role}), action="read", purpose=purpose, table="crm_person",
                              fields=["given_name", "family_name", "email"])

    assert reach("admin") == {"all"}
    assert reach("sales") == {"assigned"}
    assert reach("support") == {"team"}
    assert reach("support", "sales") == frozenset()
