"""People and their notes through the gateway: decide, audit in the same transaction, decrypt."""

from server.gateway.people._common import PERSON_FIELDS
from server.gateway.people.erasure import erase_person, shred_subjects
from server.gateway.people.notes import add_note, list_notes
from server.gateway.people.reads import find_people, get_person, list_people, person_pseudonym
from server.gateway.people.reveal import describe_reason, explain_reasons, reveal_field, reveal_reasons
from server.gateway.people.writes import create_person, import_people, update_person

__all__ = [
    "PERSON_FIELDS",
    "add_note",
    "create_person",
    "erase_person",
    "describe_reason",
    "explain_reasons",
    "find_people",
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
