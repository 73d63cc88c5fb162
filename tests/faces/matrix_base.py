"""The vocabulary of the permission matrix, shared by the files that list its entries
(test_permission_matrix.py and the matrix_*.py files of each area)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from tests.faces._client import CUSTOMER_PASSWORD, STAFF_PASSWORD  # noqa: F401 - re-exported for entries

EventKey = tuple[str, str, str]


@dataclass(frozen=True)
class Expect:
    status: int
    location: str | None = None
    """The Location header (redirects only); a trailing * matches any rest."""
    events: tuple[EventKey, ...] = ()
    """(action, entity, outcome) of every audit event the request writes, in order."""
    form: Mapping[str, str] | None = None
    """This principal's form, when it differs from the entry's."""


@dataclass(frozen=True)
class Entry:
    face: str
    method: str
    route: str
    """Litestar's path pattern; `{person_id:str}` is filled with Erika's person id."""
    anonymous: Expect
    erika: Expect
    """Erika's portal session: her own data on the portal; on the backoffice her cookie counts for nothing."""
    max: Expect
    """Max's portal session: another customer."""
    no_role: Expect
    """Staff without the right role (on the portal: a staff session, which the portal ignores)."""
    allowed: Expect | None
    """The right staff role; None on the portal, where the allowed case is the customer's own (erika)."""
    no_role_is: str = "compliance"
    allowed_is: str = "admin"
    out_of_scope: Expect | None = None
    """A sales account that does not own Erika: the role may act on people, just not on her."""
    form: Mapping[str, str] = field(default_factory=dict)
    guarded: bool = True
    """Anonymous visitors are sent to sign in (303, or 401 + HX-Redirect for htmx)."""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.face, self.method, self.route

    def path(self, person_id: uuid.UUID) -> str:
        return self.route.replace("{person_id:str}", str(person_id))

    def expect(self, principal: str) -> Expect | None:
        return getattr(self, principal)  # type: ignore[no-any-return]


SIGN_IN = Expect(303, "/signin")
PAGE = Expect(200)


def denied(action: str, entity: str = "crm_person") -> Expect:
    """Refused by the gateway's policy decision, which records the refusal."""
    return Expect(403, events=((action, entity, "denied"),))


def ok(status: int, *events: tuple[str, str], location: str | None = None) -> Expect:
    return Expect(status, location, tuple((action, entity, "ok") for action, entity in events))


PERSON_READ = ("read", "crm_person")
NOTES_READ = ("read", "crm_note")
WRONG = "not-the-password"
NEW_PERSON = {"given_name": "Jana", "family_name": "Beispiel", "email": "jana.beispiel@example.com"}
NEW_PHONE = {"phone": "+49 30 7654321"}
REVEAL = {"field": "birth_date", "reason_code": "customer_request"}
SIGNIN_FAILED = Expect(400, events=(("signin", "session", "failed"),))

