"""Identity tables: staff and customer accounts, server-side sessions, sign-in failures."""

from piccolo.columns import UUID, BigInt, Boolean, Integer, Text, Timestamptz, Varchar
from piccolo.table import Table


class StaffAccount(Table, tablename="identity_staff_account"):
    """A member of staff who signs in to the backoffice."""

    id = UUID(primary_key=True)
    username = Varchar(length=64, unique=True, help_text="Sign-in name (a handle, not personal data).")
    roles = Varchar(length=200, help_text="Comma-separated roles from policies/access.yml.")
    team = Varchar(length=64, null=True, default=None, help_text="The team whose people this account serves.")
    password_hash = Text(secret=True, help_text="argon2id hash; empty for accounts that only sign in through SSO.")
    active = Boolean(default=True)
    created_at = Timestamptz()
    totp_secret = Text(secret=True, null=True, default=None,
                       help_text="TOTP secret, AES-GCM sealed with the key file's mfa key; none until enrolled.")
    totp_last_step = Integer(null=True, default=None,
                             help_text="The last 30-second step a code was accepted for (no replay).")


class CustomerAccount(Table, tablename="identity_customer_account"):
    """A customer's portal account; the person it belongs to holds the personal data."""

    id = UUID(primary_key=True)
    person_id = UUID(unique=True, help_text="The crm_person this account acts as.")
    email_index = Varchar(length=64, unique=True, help_text="Blind index of the sign-in email.")
    password_hash = Text(secret=True, help_text="argon2id hash; empty while the customer signs in by email link "
                                                "or passkey.")
    active = Boolean(default=True)
    created_at = Timestamptz()
    verified_at = Timestamptz(null=True, default=None,
                              help_text="When the customer proved the email address; none until then.")


class Session(Table, tablename="identity_session"):
    """A server-side session; the cookie holds a random token, the table only its hash."""

    token_hash = Varchar(length=64, primary_key=True)
    face = Varchar(length=16, help_text="portal or backoffice.")
    account_id = UUID(index=True)
    created_at = Timestamptz()
    last_seen_at = Timestamptz()
    expires_at = Timestamptz(help_text="Absolute end of the session.")
    handle = UUID(null=True, default=None, index=True,
                  help_text="Public id of the session in the session list (the token hash never leaves the server).")
    stage = Varchar(length=16, default="full",
                    help_text="full, or a sign-in still waiting for a second factor: mfa, enrol.")
    method = Varchar(length=32, default="password", help_text="How the session was signed in.")
    device = Varchar(length=64, default="", help_text="Coarse browser and system label, e.g. 'Chrome on Linux'.")
    authenticated_at = Timestamptz(null=True, default=None,
                                   help_text="When the person last proved who they are (at sign-in, at the identity "
                                             "provider, or with the current password); none: not known, not recent.")


class SessionGeneration(Table, tablename="identity_session_generation"):
    """One counter (id 1) that database triggers bump whenever a session, or an account behind one,
    changes in a way that could end it or change its actor: each process polls it to clear its
    session cache (server/identity/session_cache.py)."""

    id = Integer(primary_key=True)
    value = BigInt(default=0, help_text="Bumped by triggers; only ever compared for change.")


class SigninFailure(Table, tablename="identity_signin_failure"):
    """One failed sign-in, counted for rate limiting; keys are keyed hashes, never addresses."""

    id = UUID(primary_key=True)
    face = Varchar(length=16)
    key = Varchar(length=64, index=True, help_text="HMAC of the account name or client address.")
    at = Timestamptz(index=True)
    kind = Varchar(length=16, default="signin", help_text="signin, mfa, magic_link, reset or signup.")
    account = Varchar(length=64, null=True, default=None, index=True,
                      help_text="The account-from-anywhere key of the attempt (an HMAC), so an administrator "
                                "can lift the account's locks; none for attempts on no account.")


class RecoveryCode(Table, tablename="identity_recovery_code"):
    """A one-time staff recovery code, stored as a salted argon2id hash; the code is shown once."""

    id = UUID(primary_key=True)
    account_id = UUID(index=True)
    code_hash = Varchar(length=128, unique=True, help_text="argon2id (codes made before it: a keyed hash).")
    used_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()


class Passkey(Table, tablename="identity_passkey"):
    """A WebAuthn credential (passkey) of a staff or customer account."""

    id = UUID(primary_key=True)
    account_kind = Varchar(length=16, help_text="staff or customer.")
    account_id = UUID(index=True)
    credential_id = Varchar(length=1400, unique=True, help_text="base64url credential id.")
    public_key = Text(help_text="base64url COSE public key.")
    sign_count = Integer(default=0)
    transports = Varchar(length=200, default="")
    label = Varchar(length=64, default="", help_text="The name the user gave it, e.g. 'Laptop'.")
    created_at = Timestamptz()
    last_used_at = Timestamptz(null=True, default=None)


class ExternalIdentity(Table, tablename="identity_external"):
    """A staff account's link to an OpenID provider's subject; the subject is stored as a keyed hash."""

    id = UUID(primary_key=True)
    subject_hash = Varchar(length=64, unique=True, help_text="HMAC of issuer and subject.")
    account_id = UUID(index=True)
    created_at = Timestamptz()
    last_signin_at = Timestamptz(null=True, default=None)


class EmailToken(Table, tablename="identity_email_token"):
    """A single-use emailed link (sign-in, address verification, password reset), bound to the
    browser that asked for it; only hashes are stored."""

    token_hash = Varchar(length=64, primary_key=True)
    account_id = UUID(index=True)
    purpose = Varchar(length=16, help_text="signin, verify or reset.")
    browser_hash = Varchar(length=64, help_text="Hash of the random value in the asking browser's cookie.")
    created_at = Timestamptz()
    expires_at = Timestamptz()
    used_at = Timestamptz(null=True, default=None)


class AuthChallenge(Table, tablename="identity_challenge"):
    """Short-lived state of a sign-in ceremony (WebAuthn challenge, OIDC state/nonce/PKCE verifier,
    a TOTP secret being enrolled), keyed by the hash of a random value held in the browser's cookie."""

    handle_hash = Varchar(length=64, primary_key=True)
    kind = Varchar(length=32)
    data = Text(secret=True, help_text="JSON; secrets of the ceremony, never personal data.")
    created_at = Timestamptz()
    expires_at = Timestamptz(index=True)
