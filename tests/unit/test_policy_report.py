"""Reports from the policies: the role × field matrix, decision diffs, the snapshot and the Art. 30 record."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from server.policy import PolicySet, load_policies
from server.policy.record import ARTICLES, CSV_HEADER, processing_record, record_csv, record_json
from server.policy.report import ACTIONS, ANYONE, describe, diff, matrix
from server.policy.snapshot import load_snapshot, record_loaded, snapshot_policies

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(POLICIES)


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


def _set_rule(directory: Path, rule_id: str, **changes: object) -> None:
    """Change keys of one access rule, found by id (so concurrent edits elsewhere do not matter)."""
    path = directory / "access.yml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    rule = next(r for r in doc["rules"] if r["id"] == rule_id)
    rule.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _cells(ps: PolicySet) -> dict[tuple[str, str, str], str]:
    return {(role, row.table, row.field): cell.effect for row in matrix(ps) for role, cell in row.cells.items()}


def test_the_matrix_shows_each_roles_most_permissive_read(policies: PolicySet) -> None:
    cells = _cells(policies)
    assert cells["sales", "crm_person", "birth_date"] == "mask"
    assert cells["compliance", "crm_note", "body"] == "deny"
    assert cells["customer", "crm_person", "email"] == "allow"
    assert cells["customer", "crm_person", "birth_date"] == "allow"  # the subject sees their own in full
    assert cells["compliance", "crm_person", "email"] == "allow"  # only under compliance_audit
    assert cells["support", "crm_note", "body"] == "allow"


def test_the_matrix_names_the_purpose_and_rule_behind_each_cell(policies: PolicySet) -> None:
    row = next(r for r in matrix(policies) if (r.table, r.field) == ("crm_person", "email"))
    assert (row.cells["compliance"].purpose, row.cells["compliance"].rule) == (
        "compliance_audit", "compliance-read-people")
    assert row.cells["customer"].purpose == "self_service"


def test_the_matrix_has_every_role_and_only_personal_fields(policies: PolicySet) -> None:
    rows = matrix(policies)
    assert all(set(row.cells) == set(policies.roles) for row in rows)
    listed = {(row.table, row.field) for row in rows}
    assert ("crm_person", "created_at") not in listed and ("crm_note", "id") not in listed
    assert ("crm_person", "phone") in listed and ("audit_event", "reason") in listed
    assert all(policies.fields(table)[field].personal for table, field in listed)


def test_the_actions_compared_are_exactly_those_access_yml_may_name() -> None:
    schema = json.loads((POLICIES / "schema" / "access.schema.json").read_text(encoding="utf-8"))
    assert set(ACTIONS) == set(schema["$defs"]["rule"]["properties"]["actions"]["items"]["enum"])


def test_identical_policies_have_no_diff(policies: PolicySet) -> None:
    assert diff(policies, policies) == []


def test_the_diff_names_each_decision_whose_effect_changed(tmp_path: Path, policies: PolicySet) -> None:
    copy = _copy(tmp_path)
    # Support may no longer read or write phone numbers: the contact area shrinks to email and address.
    _set_rule(copy, "support-read-write-people", categories=["identity", "contact.email", "contact.address"])
    changes = diff(policies, load_policies(copy))
    assert {(c.role, c.table, c.field, c.action, c.purpose) for c in changes} == {
        ("support", "crm_person", "phone", "read", "customer_service"),
        ("support", "crm_person", "phone", "write", "customer_service"),
    }
    assert all(c.new == "deny" and "allow" in c.old for c in changes)
    assert str(changes[0]).startswith("role support, crm_person.phone, read for customer_service: ")


def test_the_diff_reports_a_mask_that_became_an_allow(tmp_path: Path, policies: PolicySet) -> None:
    copy = _copy(tmp_path)
    _edit(copy, "fields.yml", "birth_date:  {category: identity.birth_date, sensitivity: high,",
          "birth_date:  {category: identity.birth_date, sensitivity: normal,")
    changes = diff(policies, load_policies(copy))
    wanted = ("sales", "birth_date", "read", "sales")
    sales = next(c for c in changes if (c.role, c.field, c.action, c.purpose) == wanted)
    assert "mask" in sales.old and "mask" not in sales.new and "allow" in sales.new
    assert all((c.field, c.action) == ("birth_date", "read") for c in changes)


def test_the_diff_says_on_whose_records_a_decision_holds(tmp_path: Path) -> None:
    before, after = _copy(tmp_path / "before"), _copy(tmp_path / "after")
    _set_rule(before, "sales-read-people", scope="assigned")
    _set_rule(after, "sales-read-people", scope="all")
    changes = {str(c) for c in diff(load_policies(before), load_policies(after))}
    assert "role sales, crm_person.phone, read for sales: deny; allow if assigned -> allow" in changes


def test_a_cell_that_needs_a_relation_names_it(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    _set_rule(copy, "sales-read-people", scope="assigned")
    _set_rule(copy, "admin-read-write-all", scope="all")
    row = next(r for r in matrix(load_policies(copy)) if (r.table, r.field) == ("crm_person", "phone"))
    assert (row.cells["sales"].effect, row.cells["sales"].reach, str(row.cells["sales"])) == (
        "allow", "assigned", "allow (assigned)")
    assert str(row.cells["admin"]) == "allow"
    assert str(row.cells["customer"]) == "allow"


def test_describe_names_only_the_relations_that_change_the_effect() -> None:
    assigned, team = frozenset({"assigned"}), frozenset({"team"})
    assert describe({ANYONE: "allow"}) == "allow"
    assert describe({ANYONE: "deny", assigned: "allow", team: "deny", assigned | team: "allow"}) == (
        "deny; allow if assigned")
    assert describe({ANYONE: "deny", assigned: "mask", team: "mask", assigned | team: "allow"}) == (
        "deny; mask if assigned or team; allow if assigned and team")


async def test_a_recorded_snapshot_loads_back_as_the_same_policies(tmp_path: Path, policies: PolicySet) -> None:
    target = tmp_path / "var" / "policy-snapshot.json"
    assert load_snapshot(target) is None
    assert await record_loaded(POLICIES, policies.version, path=target)
    snapshot = load_snapshot(target)
    assert snapshot is not None and snapshot.version == policies.version
    assert set(snapshot.files) == {"access.yml", "fields.yml", "purposes.yml", "retention.yml"}
    assert "access.schema.json" in snapshot.schemas
    assert snapshot_policies(snapshot).version == policies.version
    assert [p.name for p in target.parent.iterdir()] == ["policy-snapshot.json"]  # no temporary file left


async def test_a_snapshot_keeps_its_texts_when_the_files_change_later(tmp_path: Path,
                                                                       policies: PolicySet) -> None:
    copy = _copy(tmp_path)
    target = tmp_path / "policy-snapshot.json"
    await record_loaded(copy, policies.version, path=target)
    _edit(copy, "access.yml", "    fields: [given_name, family_name, email]\n", "    fields: [given_name]\n")
    snapshot = load_snapshot(target)
    assert snapshot is not None
    changes = {str(c) for c in diff(snapshot_policies(snapshot), load_policies(copy))}
    assert "role compliance, crm_person.email, read for compliance_audit: allow -> deny" in changes


def test_an_unreadable_snapshot_is_named_with_the_fix(tmp_path: Path) -> None:
    target = tmp_path / "policy-snapshot.json"
    target.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="policy-snapshot.json is unreadable.*delete it"):
        load_snapshot(target)


def test_the_record_has_one_activity_per_purpose_with_its_legal_basis(policies: PolicySet) -> None:
    record = processing_record(policies)
    assert record["controller"] == "the business running this Mutual instance"
    assert record["generated_from"] == policies.version
    by_id = {a["id"]: a for a in record["activities"]}
    assert list(by_id) == list(policies.purposes)
    for purpose in policies.purposes.values():
        activity = by_id[purpose.id]
        assert activity["title"] == {"de": purpose.title_de, "en": purpose.title_en}
        assert activity["legal_basis"] == purpose.legal_basis
        assert activity["legal_basis_article"] == ARTICLES[purpose.legal_basis]
        assert activity["consent_required"] is purpose.consent_required
        assert activity["recipients"] == list(purpose.recipients)
        assert activity["subjects"] == "customers and contacts (crm_person)"


def test_every_legal_basis_the_schema_allows_has_an_article() -> None:
    schema = json.loads((POLICIES / "schema" / "purposes.schema.json").read_text(encoding="utf-8"))
    assert set(ARTICLES) == set(schema["$defs"]["purpose"]["properties"]["legal_basis"]["enum"])


def test_the_record_lists_the_categories_each_purpose_processes_with_their_retention(
        policies: PolicySet) -> None:
    by_id = {a["id"]: a for a in processing_record(policies)["activities"]}
    audit = {c["category"]: c for c in by_id["compliance_audit"]["categories"]}
    # what compliance-read-people and compliance-read-audit allow (the audit's personal columns)
    assert set(audit) == {"identity.name", "contact.email", "audit.actor", "audit.subject_pseudonyms",
                          "audit.reason", "audit.time"}
    assert audit["contact.email"]["fields"] == ["crm_person.email"]
    assert audit["contact.email"]["retention"] == [{
        "rule": "customer-record", "keep_days": 3 * 365, "after": "relationship_end", "action": "erase",
        "description": policies.retention["customer-record"].description}]
    service = {c["category"]: c for c in by_id["customer_service"]["categories"]}
    assert {"identity.birth_date", "notes.free_text", "contact.phone"} <= set(service)  # masked reads count
    assert [r["rule"] for r in service["identity.birth_date"]["retention"]] == ["sensitive-identity"]
    # crm_person.id and crm_note.person share a category but not a retention rule: both are listed.
    assert [r["rule"] for r in service["identifier.subject"]["retention"]] == ["contact-notes", "customer-record"]
    assert by_id["erasure_request"]["categories"] == []  # erasure neither reads nor writes


def test_the_record_holds_no_category_of_a_non_personal_column(policies: PolicySet) -> None:
    technical = {spec.category for table in policies.tables for spec in policies.fields(table).values()
                 if not spec.personal}
    personal = {spec.category for table in policies.tables for spec in policies.fields(table).values()
                if spec.personal}
    listed = {c["category"] for a in processing_record(policies)["activities"] for c in a["categories"]}
    assert listed and listed <= personal
    assert not listed & (technical - personal), "technical categories such as technical.timestamp"


def test_the_csv_has_a_header_and_a_row_per_purpose_and_category(policies: PolicySet) -> None:
    record = processing_record(policies)
    rows = list(csv.reader(io.StringIO(record_csv(record))))
    assert tuple(rows[0]) == CSV_HEADER
    expected = [(a["id"], c["category"]) for a in record["activities"] for c in a["categories"]]
    body = [dict(zip(CSV_HEADER, row)) for row in rows[1:]]
    assert [(r["purpose"], r["category"]) for r in body if r["category"]] == expected
    # A purpose processing no category keeps one row, so its legal basis is still on record.
    empty = [a["id"] for a in record["activities"] if not a["categories"]]
    assert [r["purpose"] for r in body if not r["category"]] == empty
    subject = next(r for r in body if (r["purpose"], r["category"]) == ("customer_service", "identifier.subject"))
    assert (subject["retention_rule"], subject["keep_days"]) == ("contact-notes; customer-record", "730; 1095")


def test_the_json_keeps_umlauts_readable(policies: PolicySet) -> None:
    text = record_json(processing_record(policies))
    assert "Löschersuchen" in text
    assert json.loads(text)["activities"][0]["title"]["de"] == "Kundenservice"
