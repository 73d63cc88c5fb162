"""The one door to personal data: policy decision, audit in the same step, vault.

Any table with personal fields is served by one set of operations (`reads.get`, `reads.page`,
`reads.of_subject`, `search.search`, `writes.create`, `writes.update`, `reveal.reveal`,
`subjects.erase`, `subjects.export`) once it is classified in policies/fields.yml and described with
`describe()`; people and notes are two such descriptions (`server.gateway.people`).
"""

from server.gateway.erasure import finish_erasure
from server.gateway.people import (
    NOTES,
    PEOPLE,
    PERSON_FIELDS,
    add_note,
    create_person,
    erase_person,
    find_people,
    get_person,
    get_person_with_notes,
    import_people,
    list_notes,
    list_people,
    person_pseudonym,
    reveal_field,
    shred_subjects,
    update_person,
)
from server.gateway.reasons import ReasonView
from server.gateway.records import Page, Record
from server.gateway.reveal import describe_reason, explain_reasons, reveal_reasons
from server.gateway.spec import TableSpec, describe

__all__ = [
    "NOTES",
    "PEOPLE",
    "PERSON_FIELDS",
    "Page",
    "ReasonView",
    "Record",
    "TableSpec",
    "add_note",
    "create_person",
    "describe",
    "describe_reason",
    "erase_person",
    "explain_reasons",
    "find_people",
    "finish_erasure",
    "get_person",
    "get_person_with_notes",
    "import_people",
    "list_notes",
    "list_people",
    "person_pseudonym",
    "reveal_field",
    "reveal_reasons",
    "shred_subjects",
    "update_person",
]
