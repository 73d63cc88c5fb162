"""Identity tables: staff and customer accounts, server-side sessions, sign-in failures."""

from piccolo.columns import UUID, Boolean, Text, Timestamptz, Varchar
from piccolo.table import Table


class StaffAccount(Table, tablename="identity_staff_account"):
    """A member of staff who signs in to the backoffice."""

    id = UUID(primary_key=True)
    username = Varchar(length=64, unique=True, help_text="Sign-in name (a handle, not personal data).")
    roles = Varchar(length=200, help_text="Comma-separated roles from policies/access.yml.")
    team = Varchar(length=64, null=True, default=None, help_text="The team whose people this account serves.")
    password_hash = Text(secret=True, help_text="argon2id hash.")
    active = Boolean(default=True)
    created_at = Timestamptz()


class CustomerAccount(Table, tablename="identity_customer_account"):
    """A customer's portal account; the person it belongs to holds the personal data."""

    id = UUID(primary_key=True)
    person_id = UUID(unique=True, help_text="The crm_person this account acts as.")
    email_index = Varchar(length=64, unique=True, help_text="Blind index of the sign-in email.")
    password_hash = Text(secret=True, help_text="argon2id hash.")
    active = Boolean(default=True)
    created_at = Timestamptz()


class Session(Table, tablename="identity_session"):
    """A server-side session; the cookie holds a random token, the table only its hash."""

    token_hash = Varchar(length=64, primary_key=True)
    face = Varchar(length=16, help_text="portal or backoffice.")
    account_id = UUID(index=True)
    created_at = Timestamptz()
    last_seen_at = Timestamptz()
    expires_at = Timestamptz(help_text="Absolute end of the session.")


class SigninFailure(Table, tablename="identity_signin_failure"):
    """One failed sign-in, counted for rate limiting; keys are keyed hashes, never addresses."""

    id = UUID(primary_key=True)
    face = Varchar(length=16)
    key = Varchar(length=64, index=True, help_text="HMAC of the account name or client address.")
    at = Timestamptz(index=True)
