"""The one door to personal data: policy decision, audit in the same transaction, vault."""

from server.gateway.erasure import finish_erasure
from server.gateway.people import (
    PERSON_FIELDS,
    add_note,
    create_person,
    describe_reason,
    erase_person,
    explain_reasons,
    find_people,
    get_person,
    import_people,
    list_notes,
    list_people,
    person_pseudonym,
    reveal_field,
    reveal_reasons,
    shred_subjects,
    update_person,
)
from server.gateway.reasons import ReasonView
from server.gateway.records import Page, Record

__all__ = [
    "PERSON_FIELDS",
    "Page",
    "ReasonView",
    "Record",
    "add_note",
    "create_person",
    "describe_reason",
    "erase_person",
    "explain_reasons",
    "find_people",
    "finish_erasure",
    "get_person",
    "import_people",
    "list_notes",
    "list_people",
    "person_pseudonym",
    "reveal_field",
    "reveal_reasons",
    "shred_subjects",
    "update_person",
]
