"""Demo data for `make run`: staff of every role, two customers with portal accounts, a few records."""

from __future__ import annotations

from dataclasses import dataclass

from server.actor import Actor, system_actor
from server.crm import organisations
from server.crm import service as people
from server.identity.service import create_customer_account, create_staff, has_staff_accounts

STAFF = [
    ("admin", "admin", "mutual-admin-demo"),
    ("sales", "sales", "mutual-sales-demo"),
    ("support", "support", "mutual-support-demo"),
    ("compliance", "compliance", "mutual-compliance-demo"),
]
TEAM = "service"  # sales and support serve the two customers; the other people are nobody's yet
CUSTOMERS = [
    {"given_name": "Erika", "family_name": "Mustermann", "email": "erika.mustermann@example.org",
     "phone": "+49 30 1234567", "address": "Heidestraße 17\n51147 Köln", "birth_date": "1964-08-12"},
    {"given_name": "Max", "family_name": "Mustermann", "email": "max.mustermann@example.org",
     "phone": "+49 89 7654321", "address": "Musterweg 3\n80331 München", "birth_date": "1962-03-04"},
]
CUSTOMER_PASSWORDS = ["erika-portal-demo", "max-portal-demo"]
OTHERS = [
    {"given_name": "Jana", "family_name": "Beispiel", "email": "jana.beispiel@example.com", "phone": "+49 40 555 0101"},
    {"given_name": "John", "family_name": "Example", "email": "john.example@example.net", "phone": "+44 20 7946 0000"},
]
ORGANISATIONS = ["Beispiel GmbH", "Example Ltd", "Muster & Söhne KG"]


@dataclass(frozen=True)
class DemoLogin:
    face: str
    login: str
    password: str


def demo_logins() -> list[DemoLogin]:
    return [DemoLogin("backoffice", u, p) for u, _, p in STAFF] + [
        DemoLogin("portal", c["email"], p) for c, p in zip(CUSTOMERS, CUSTOMER_PASSWORDS)
    ]


async def seed_demo() -> bool:
    """Seed once; returns False when the database already holds staff accounts."""
    if await has_staff_accounts():
        return False
    actor = system_actor("seed")
    ids = {}
    for username, role, password in STAFF:
        ids[role] = await create_staff(username, password, [role], team=TEAM if role in ("sales", "support") else None)
    # The customers are the sales demo account's own, served by the support team.
    owner = Actor(kind="staff", id=str(ids["sales"]), face="cli", roles=frozenset({"sales"}), display="sales",
                  team=TEAM)
    orgs = [await organisations.create(name) for name in ORGANISATIONS]
    for i, (values, password) in enumerate(zip(CUSTOMERS, CUSTOMER_PASSWORDS)):
        person_id = await people.create_person(owner, values, organisation_id=orgs[i % len(orgs)])
        await create_customer_account(person_id, values["email"], password)
        await people.add_note(owner, person_id, "Prefers email. Asked about the new service plan.")
    for i, values in enumerate(OTHERS):
        person_id = await people.create_person(actor, values, organisation_id=orgs[(i + 1) % len(orgs)])
        await people.add_note(actor, person_id, "Met at the trade fair.")
    return True
