"""People services: validate and normalise input, then go through the gateway."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping

from server import gateway
from server.actor import Actor, system_actor
from server.errors import Invalid, NotFound, PolicyDenied
from server.gateway import Page, ReasonView, Record
from server.identity.service import remove_customer_accounts
from server.vault import AddressInvalid, canonical_email, mail_address

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE_RE = re.compile(r"^\+?[0-9 ()/\-]{5,30}$")
LIMITS = {"given_name": 100, "family_name": 100, "email": 254, "phone": 30, "address": 300}


def email_problem(email: str) -> str | None:
    """Why this is no address we can mail (and compare safely), with the fix; None when it is one."""
    try:
        canonical_email(email)
    except AddressInvalid as exc:
        return f"is not an email address we can use ({exc}); use the form name@example.org"
    return None


async def address_on_record(person_id: uuid.UUID) -> str | None:
    """The email address stored for a person, read through the gateway by the system mailer for account
    security (audited like any read): every mail of sign-in, verification and reset goes to this address,
    never to what someone typed into a form. None when the person or their address is gone."""
    actor = dataclasses.replace(system_actor("mailer"), face="portal")
    try:
        record = await gateway.get_person(actor, purpose="account_security", person_id=person_id)
    except NotFound:
        return None
    stored = record["email"]
    if not stored:
        return None
    try:
        return mail_address(stored)
    except AddressInvalid:
        return None  # an address from before validation that no mail can reach


def clean_person(form: Mapping[str, str], *, partial: bool = False) -> dict[str, str | None]:
    """Normalise a person form; raise Invalid naming every bad field and how to fix it."""
    values: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for name in gateway.PERSON_FIELDS:
        if name not in form:
            continue
        text = " ".join(str(form[name]).split()) if name != "address" else str(form[name]).strip()
        values[name] = text or None
        if name in LIMITS and len(text) > LIMITS[name]:
            errors[name] = f"is {len(text)} characters long; shorten it to at most {LIMITS[name]}"
    if not partial and not values.get("family_name"):
        errors["family_name"] = "is required; enter the person's family name"
    email = values.get("email")
    if email and "email" not in errors and (problem := email_problem(email)):
        errors["email"] = problem
    phone = values.get("phone")
    if phone and "phone" not in errors and not PHONE_RE.match(phone):
        errors["phone"] = "may hold only digits, spaces, + ( ) / -, 5 to 30 characters, e.g. +49 30 1234567"
    birth = values.get("birth_date")
    if birth:
        try:
            day = dt.date.fromisoformat(birth)
        except ValueError:
            errors["birth_date"] = "is not a date; use YYYY-MM-DD, e.g. 1964-08-12"
        else:
            if day > dt.date.today():
                errors["birth_date"] = "lies in the future; check the year"
    if errors:
        raise Invalid(errors)
    return values


def parse_id(raw: str, what: str = "person") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (ValueError, TypeError):
        raise Invalid({"id": f"'{raw[:40]}' is not a {what} id; open the {what} from the list"}) from None


async def list_people(actor: Actor, *, after: str | None, purpose: str = "customer_service") -> Page:
    return await gateway.list_people(actor, purpose=purpose, after=after)


def search_kind(query: str) -> str:
    """email when it has an @, phone when it is mostly digits, else name."""
    if "@" in query:
        return "email"
    if PHONE_RE.match(query) and sum(c.isdigit() for c in query) >= 5:
        return "phone"
    return "name"


async def find(actor: Actor, query: str, *, purpose: str = "customer_service") -> list[Record]:
    """One search box: an exact email, a phone number (any common notation) or name words."""
    query = " ".join(query.split())
    kind = search_kind(query)
    if kind == "email" and not EMAIL_RE.match(query):
        raise Invalid({"query": "looks like an email address but is not whole; type all of it, e.g. "
                                "name@example.org (email search is exact)"})
    if kind == "name" and len(query.replace(" ", "")) < 2:
        raise Invalid({"query": "is too short; type an email address, a phone number or at least two "
                                "letters of a name"})
    return await gateway.find_people(actor, purpose=purpose, field=kind, query=query)


async def get_person(actor: Actor, person_id: uuid.UUID, *, purpose: str = "customer_service") -> Record:
    return await gateway.get_person(actor, purpose=purpose, person_id=person_id)


async def create_person(actor: Actor, form: Mapping[str, str], *, purpose: str = "customer_service",
                        organisation_id: uuid.UUID | None = None) -> uuid.UUID:
    values = {k: v for k, v in clean_person(form).items() if v is not None}
    return await gateway.create_person(actor, purpose=purpose, values=values, organisation_id=organisation_id)


async def update_person(actor: Actor, person_id: uuid.UUID, form: Mapping[str, str], *,
                        purpose: str = "customer_service") -> list[str]:
    """Write only the fields that changed; returns their names."""
    values = clean_person(form, partial=True)
    current = await gateway.get_person(actor, purpose=purpose, person_id=person_id)
    changes = {k: v for k, v in values.items() if current.effects.get(k) == "allow" and current[k] != v}
    await gateway.update_person(actor, purpose=purpose, person_id=person_id, changes=changes)
    return sorted(changes)


async def reveal(actor: Actor, person_id: uuid.UUID, field: str, reason_code: str, ticket: str = "",
                 note: str = "", *, purpose: str = "customer_service") -> str:
    """Reveal one masked field: a reason from the list, an optional ticket reference, an optional note
    (kept encrypted under the person's key, shown to them in their access log)."""
    return await gateway.reveal_field(actor, purpose=purpose, person_id=person_id, field=field,
                                      reason=reason_code, ticket=ticket, note=note)


def reveal_reasons() -> dict[str, str]:
    """The reasons the Reveal control offers: id -> title."""
    return gateway.reveal_reasons()


def describe_reasons(recorded: Iterable[str]) -> dict[str, str]:
    """For the compliance console: each recorded reveal reason in words (title, ticket, whether a sealed
    note is there; never the note's ciphertext); other texts as recorded."""
    return {text: gateway.describe_reason(text) for text in set(recorded) if text}


async def my_reveal_reasons(actor: Actor, recorded: Iterable[str]) -> dict[str, ReasonView]:
    """For the signed-in customer's access log: each recorded reveal reason's title and ticket, and the
    note staff wrote, opened with the customer's own data key."""
    if actor.person_id is None:
        return {}
    return await gateway.explain_reasons(actor, person_id=actor.person_id, recorded=recorded)


async def add_note(actor: Actor, person_id: uuid.UUID, body: str, *, purpose: str = "customer_service") -> None:
    body = body.strip()
    if not body:
        raise Invalid({"body": "is empty; write the note first"})
    if len(body) > 5000:
        raise Invalid({"body": f"is {len(body)} characters long; keep notes under 5000"})
    await gateway.add_note(actor, purpose=purpose, person_id=person_id, body=body)


async def person_with_notes(actor: Actor, person_id: uuid.UUID, *, purpose: str = "customer_service",
                            ) -> tuple[Record, list[Record], str | None]:
    """A person, their latest notes and, when the policy refuses the notes, why (one audited step)."""
    person = await gateway.get_person_with_notes(actor, purpose=purpose, person_id=person_id)
    included: dict[str, list[Record] | PolicyDenied] = person.extra["included"]  # type: ignore[assignment]
    notes = included["crm_note"]
    if isinstance(notes, PolicyDenied):
        return person, [], str(notes)
    return person, notes, None


async def list_notes(actor: Actor, person_id: uuid.UUID, *, purpose: str = "customer_service") -> list[Record]:
    return await gateway.list_notes(actor, purpose=purpose, person_id=person_id)


async def erase_person(actor: Actor, person_id: uuid.UUID, *, purpose: str = "erasure_request") -> None:
    """Erase a person for good (crypto-shredding), their portal account included, in one transaction."""
    await gateway.erase_person(actor, purpose=purpose, person_id=person_id, also=remove_customer_accounts)
    await gateway.finish_erasure()
