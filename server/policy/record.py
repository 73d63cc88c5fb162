"""The record of processing activities (GDPR Art. 30), generated from the policies alone."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from server.policy.engine import PolicySet
from server.policy.report import (
    contexts_for,
    decide,
    ordered_roles,
    personal_fields,
    personal_tables,
)

CONTROLLER = "the business running this Mutual instance"
SUBJECTS = "customers and contacts (crm_person)"
PROCESSING_ACTIONS = ("read", "write")
ARTICLES = {"consent": "GDPR Art. 6(1)(a)", "contract": "GDPR Art. 6(1)(b)",
            "legal_obligation": "GDPR Art. 6(1)(c)", "vital_interests": "GDPR Art. 6(1)(d)",
            "public_task": "GDPR Art. 6(1)(e)", "legitimate_interests": "GDPR Art. 6(1)(f)"}
"""Where each legal basis purposes.yml may name is set out."""
CSV_HEADER = ("purpose", "title_en", "title_de", "legal_basis", "legal_basis_article", "consent_required",
              "description",
              "recipients", "subjects", "category", "fields", "retention_rule", "keep_days", "after",
              "retention_action")


def _processed_fields(ps: PolicySet, purpose: str) -> list[tuple[str, str]]:
    """(table, field) of every personal field some role may read or write (in full or masked) for
    ``purpose``, on anyone's record or on one related to the member of staff."""
    found: dict[tuple[str, str], None] = {}
    for table in personal_tables(ps):
        fields = personal_fields(ps, table)
        for role in ordered_roles(ps):
            for action in PROCESSING_ACTIONS:
                for context in contexts_for(role):
                    decisions = decide(ps, role, action, purpose, table, fields, context)
                    found.update(dict.fromkeys((table, f) for f, d in decisions.items() if d.effect != "deny"))
    return list(found)


def _categories(ps: PolicySet, purpose: str) -> list[dict[str, Any]]:
    fields_of: dict[str, list[str]] = {}
    rules_of: dict[str, dict[str, None]] = {}
    for table, field in _processed_fields(ps, purpose):
        spec = ps.fields(table)[field]
        fields_of.setdefault(spec.category, []).append(f"{table}.{field}")
        if spec.retention is not None:  # the loader requires one on every personal field
            rules_of.setdefault(spec.category, {})[spec.retention] = None
    retention = ps.retention
    return [
        {
            "category": category,
            "fields": fields_of[category],
            "retention": [
                {"rule": rule, "keep_days": retention[rule].keep_days, "after": retention[rule].after,
                 "action": retention[rule].action, "description": retention[rule].description}
                for rule in sorted(rules_of.get(category, {}))
            ],
        }
        for category in sorted(fields_of)
    ]


def processing_record(ps: PolicySet) -> dict[str, Any]:
    """One activity per purpose, with the personal data categories that some role's access rules let be
    read or written (in full or masked) for it, each with its retention rules."""
    return {
        "controller": CONTROLLER,
        "generated_from": ps.version,
        "activities": [
            {
                "id": purpose.id,
                "title": {"de": purpose.title_de, "en": purpose.title_en},
                "legal_basis": purpose.legal_basis,
                "legal_basis_article": ARTICLES.get(purpose.legal_basis, ""),
                "consent_required": purpose.consent_required,
                "description": purpose.description,
                "recipients": list(purpose.recipients),
                "subjects": SUBJECTS,
                "categories": _categories(ps, purpose.id),
            }
            for purpose in ps.purposes.values()
        ],
    }


def record_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False)


def record_csv(record: dict[str, Any]) -> str:
    """A header row, then one row per purpose × category; a purpose that processes no category still
    gets one row (with the category columns empty) so that its legal basis is on record. Several
    retention rules of one category are joined with "; " in each retention column, in the same order."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for activity in record["activities"]:
        purpose = [activity["id"], activity["title"]["en"], activity["title"]["de"], activity["legal_basis"],
                   activity["legal_basis_article"], "yes" if activity["consent_required"] else "no",
                   activity["description"],
                   "; ".join(activity["recipients"]), activity["subjects"]]
        for category in activity["categories"] or [None]:
            if category is None:
                writer.writerow([*purpose, "", "", "", "", "", ""])
                continue
            rules = category["retention"]
            writer.writerow([*purpose, category["category"], "; ".join(category["fields"]),
                             *("; ".join(str(r[key]) for r in rules)
                               for key in ("rule", "keep_days", "after", "action"))])
    return out.getvalue()
