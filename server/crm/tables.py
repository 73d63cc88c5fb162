"""CRM tables. Personal columns hold only vault tokens; read and write them through server.gateway."""

from piccolo.columns import UUID, ForeignKey, Text, Timestamptz, Varchar
from piccolo.table import Table


class Organisation(Table, tablename="crm_organisation"):
    """A company or institution; its name is business data, not personal data."""

    id = UUID(primary_key=True)
    name = Varchar(length=200)
    created_at = Timestamptz()


class Person(Table, tablename="crm_person"):
    """A data subject. Every personal field is an AES-256-GCM token bound to this row."""

    id = UUID(primary_key=True)
    pseudonym = UUID(unique=True, help_text="Stands for the person in audit events.")
    organisation = ForeignKey(references=Organisation, null=True)
    owner_id = UUID(null=True, default=None, index=True,
                    help_text="The staff account that owns the relationship (record scope 'assigned').")
    team = Varchar(length=64, null=True, default=None, index=True,
                   help_text="The staff team that serves this person (record scope 'team').")
    given_name = Text(null=True, default=None, secret=True)
    family_name = Text(null=True, default=None, secret=True)
    email = Text(null=True, default=None, secret=True)
    email_index = Varchar(length=64, null=True, index=True, help_text="Blind index of the email.")
    phone = Text(null=True, default=None, secret=True)
    phone_index = Varchar(length=64, null=True, index=True, help_text="Blind index of the phone (E.164).")
    address = Text(null=True, default=None, secret=True)
    birth_date = Text(null=True, default=None, secret=True)
    created_at = Timestamptz(index=True)
    updated_at = Timestamptz()


class Note(Table, tablename="crm_note"):
    """A note about a person, written by staff; the body is encrypted with the person's key."""

    id = UUID(primary_key=True)
    person = ForeignKey(references=Person, index=True)
    author_id = UUID(help_text="The staff account that wrote it.")
    body = Text(secret=True)
    created_at = Timestamptz(index=True)


class PersonToken(Table, tablename="crm_person_token"):
    """Blind-index entries of the tokens of a person's names, for name search; no clear text."""

    person = ForeignKey(references=Person, index=True)
    token_index = Varchar(length=64, index=True, help_text="Truncated blind index of one normalised name token.")


class RevealGrant(Table, tablename="crm_reveal_grant"):
    """A member of staff may see one sensitive field of one person unmasked until `expires_at`.

    Made by a reveal with a reason (audited); the value itself is never stored here."""

    staff_id = UUID(index=True)
    person = ForeignKey(references=Person, index=True)
    field = Varchar(length=64)
    expires_at = Timestamptz()
