"""Environment → frozen settings, read once per process."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    """Where the SQLite file, the development key file and logs live."""
    database_url: str = field(repr=False)
    """sqlite:///path or postgresql://user:password@host:port/db (may hold a password: not in repr)."""
    key_file: Path
    """JSON file holding the key-encryption and blind-index keys; never inside the database."""
    dev_mode: bool
    """Development mode: `make run` may create a key file when none exists."""
    policies_dir: Path
    """The reviewed YAML policies."""
    erasure_ledger: Path
    """Append-only list of erased subjects, kept with the keys and outside backups; replayed on restore."""
    subject_key_store: Path
    """Every data key wrapped under the current KEK, rewritten at each erasure, kept with the keys and
    outside database backups: restores survivors of backups whose KEK an erasure destroyed."""
    session_idle_minutes: int
    """A session unused for this long ends."""
    session_absolute_hours: int
    """A session ends this long after sign-in, however active."""
    signin_max_failures: int
    """Failed sign-ins per account or per client address before a pause is imposed."""
    signin_window_minutes: int
    """Window over which failed sign-ins are counted."""
    expected_people: int
    """Rows the search indexes are sized for: blind indexes are truncated so each value matches
    several people at this size (CipherSweet's rule). Changing it needs `mutual keys rotate-index`."""
    phone_region: str
    """Region for phone numbers written without a country code (E.164 normalisation)."""
    reveal_minutes: int
    """How long a revealed sensitive field stays visible to the member of staff who revealed it."""
    audit_signing_key_file: Path
    """PEM (PKCS8) Ed25519 private key that signs audit checkpoints; separate from the encryption keys."""
    audit_retention_days: int
    """`mutual audit prune` deletes audit events older than this, after signing a checkpoint."""
    audit_public_keys: tuple[str, ...]
    """The trusted audit public keys, pinned (MUTUAL_AUDIT_PUBLIC_KEY, comma-separated: each the base64 raw key
    or its sha256 fingerprint, as `mutual audit public-key` prints); empty: verification says UNANCHORED."""
    audit_sign_seconds: int
    """Each app process signs the audit head this often when events came since the last checkpoint, and
    publishes it to the witnesses (0: only every MUTUAL_AUDIT_CHECKPOINT_EVERY events)."""
    audit_witnesses: tuple[str, ...]
    """Where signed heads are published outside the database (MUTUAL_AUDIT_WITNESS, comma-separated:
    file:///path or a path, an append-only JSON Lines file); `mutual audit verify` compares against them."""
    audit_sequencer: str
    """background (default): on PostgreSQL a request records its events in audit_pending and the sequencer
    (one leader per deployment) chains them within milliseconds; eager: the recording call chains them
    itself before it returns (the test suite, so events are in audit_event at once)."""
    audit_pending_max_seconds: int
    """`mutual audit verify` fails when an event waited longer than this to be sequenced."""
    staff_mfa: str
    """required (default): staff who sign in with a password must pass a second factor, and enrol
    one first if they have none; optional: a second factor is asked for only when enrolled."""
    reauth_minutes: int
    """Changes to how one signs in (second factor, passkeys, ending sessions) need a sign-in this recent."""
    pending_signin_minutes: int
    """How long a password-checked sign-in may wait for its second factor."""
    email_link_minutes: int
    """Lifetime of an emailed sign-in, verification or reset link (single use, bound to the browser)."""
    smtp_host: str
    """SMTP server for outgoing mail. Empty: mail goes to `mail_outbox`, which only development mode or
    `mail_dev_outbox` allows; otherwise the faces refuse to start."""
    smtp_port: int
    smtp_security: str
    """none, starttls or tls."""
    smtp_user: str
    smtp_password: str = field(repr=False)
    mail_from: str
    mail_outbox: Path
    """Directory that receives mails as .eml files when no SMTP host is set (development)."""
    mail_dev_outbox: bool
    """MUTUAL_MAIL_DEV_OUTBOX=1: use the outbox without development mode (the test suite); the outbox holds
    addresses and live sign-in links in plain text, so never in production."""
    portal_origin: str
    """Public origin of the portal (https://portal.example.org); links in mails and the WebAuthn origin.
    Empty: taken from the request, which is only right behind a proxy that sets the Host header."""
    backoffice_origin: str
    oidc_issuer: str
    """OpenID provider for staff single sign-on; empty: SSO is off."""
    oidc_client_id: str
    oidc_client_secret: str = field(repr=False)
    oidc_scopes: str
    oidc_role_claim: str
    """Claim holding the user's groups or roles, e.g. groups."""
    oidc_role_map: dict[str, str]
    """Claim value → Mutual role, from MUTUAL_OIDC_ROLE_MAP="crm-admins=admin,crm-sales=sales"."""
    oidc_team_claim: str
    oidc_label: str
    """The button's text: 'Sign in with …'."""
    oidc_mfa: str
    """Whose second factor counts for staff signing in through the provider: amr (default: the
    provider's, when the ID token's `amr` claim shows one; otherwise Mutual asks for its own),
    provider (always the provider's: it enforces MFA for everyone), mutual (always Mutual's own)."""
    oidc_max_age_minutes: int | None
    """max_age sent to the provider: it signs the person in again when its own sign-in is older. Default:
    reauth_minutes, so an SSO sign-in is as recent as a password one; None (MUTUAL_OIDC_MAX_AGE_MINUTES=off)
    sends none."""

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgres://", "postgresql://"))

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))


def _role_map(raw: str) -> dict[str, str]:
    pairs = [p.strip() for p in raw.split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1 or not all(x.strip() for x in p.split("="))]
    if bad:
        raise ValueError(f"MUTUAL_OIDC_ROLE_MAP: {', '.join(bad)} is not claim-value=role; "
                         "write it as crm-admins=admin,crm-sales=sales")
    return {k.strip(): v.strip() for k, v in (p.split("=") for p in pairs)}


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def _optional_minutes(name: str, default: str) -> int | None:
    """A number of minutes (0 or more), or None for "off"."""
    value = os.environ.get(name, default).strip().lower()
    if value == "off":
        return None
    if not value.isdigit():
        raise ValueError(f"{name}={value!r} is not a number of minutes; write one (such as 15) or off")
    return int(value)


def _listed(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@functools.cache
def get_settings() -> Settings:
    var_dir = Path(os.environ.get("MUTUAL_VAR_DIR", REPO_ROOT / "var")).resolve()
    database_url = os.environ.get("MUTUAL_DATABASE_URL") or f"sqlite:///{var_dir / 'mutual.sqlite3'}"
    key_file = Path(os.environ.get("MUTUAL_KEY_FILE", var_dir / "keys.json"))
    return Settings(
        var_dir=var_dir,
        database_url=database_url,
        key_file=key_file,
        dev_mode=_flag("MUTUAL_DEV", False),
        policies_dir=Path(os.environ.get("MUTUAL_POLICIES_DIR", REPO_ROOT / "policies")),
        erasure_ledger=Path(os.environ.get("MUTUAL_ERASURE_LEDGER", key_file.parent / "erasure-ledger.jsonl")),
        subject_key_store=Path(os.environ.get("MUTUAL_SUBJECT_KEY_STORE", key_file.parent / "subject-keys.json")),
        session_idle_minutes=int(os.environ.get("MUTUAL_SESSION_IDLE_MINUTES", "30")),
        session_absolute_hours=int(os.environ.get("MUTUAL_SESSION_ABSOLUTE_HOURS", "12")),
        signin_max_failures=int(os.environ.get("MUTUAL_SIGNIN_MAX_FAILURES", "5")),
        signin_window_minutes=int(os.environ.get("MUTUAL_SIGNIN_WINDOW_MINUTES", "15")),
        expected_people=int(os.environ.get("MUTUAL_EXPECTED_PEOPLE", "100000")),
        phone_region=os.environ.get("MUTUAL_PHONE_REGION", "DE"),
        reveal_minutes=int(os.environ.get("MUTUAL_REVEAL_MINUTES", "10")),
        audit_signing_key_file=Path(os.environ.get("MUTUAL_AUDIT_SIGNING_KEY", key_file.parent / "audit-signing.key")),
        audit_retention_days=int(os.environ.get("MUTUAL_AUDIT_RETENTION_DAYS", str(6 * 365))),
        audit_public_keys=_listed("MUTUAL_AUDIT_PUBLIC_KEY"),
        audit_sign_seconds=int(os.environ.get("MUTUAL_AUDIT_SIGN_SECONDS", "60")),
        audit_witnesses=_listed("MUTUAL_AUDIT_WITNESS"),
        audit_sequencer=_choice("MUTUAL_AUDIT_SEQUENCER", "background", ("background", "eager")),
        audit_pending_max_seconds=int(os.environ.get("MUTUAL_AUDIT_PENDING_MAX_SECONDS", "60")),
        staff_mfa=_choice("MUTUAL_STAFF_MFA", "required", ("required", "optional")),
        reauth_minutes=int(os.environ.get("MUTUAL_REAUTH_MINUTES", "15")),
        pending_signin_minutes=int(os.environ.get("MUTUAL_PENDING_SIGNIN_MINUTES", "10")),
        email_link_minutes=int(os.environ.get("MUTUAL_EMAIL_LINK_MINUTES", "10")),
        smtp_host=os.environ.get("MUTUAL_SMTP_HOST", ""),
        smtp_port=int(os.environ.get("MUTUAL_SMTP_PORT", "587")),
        smtp_security=_choice("MUTUAL_SMTP_SECURITY", "starttls", ("none", "starttls", "tls")),
        smtp_user=os.environ.get("MUTUAL_SMTP_USER", ""),
        smtp_password=os.environ.get("MUTUAL_SMTP_PASSWORD", ""),
        mail_from=os.environ.get("MUTUAL_MAIL_FROM", "Mutual <no-reply@localhost>"),
        mail_outbox=Path(os.environ.get("MUTUAL_MAIL_OUTBOX", var_dir / "outbox")),
        mail_dev_outbox=_flag("MUTUAL_MAIL_DEV_OUTBOX", False),
        portal_origin=os.environ.get("MUTUAL_PORTAL_ORIGIN", "").rstrip("/"),
        backoffice_origin=os.environ.get("MUTUAL_BACKOFFICE_ORIGIN", "").rstrip("/"),
        oidc_issuer=os.environ.get("MUTUAL_OIDC_ISSUER", "").rstrip("/"),
        oidc_client_id=os.environ.get("MUTUAL_OIDC_CLIENT_ID", ""),
        oidc_client_secret=os.environ.get("MUTUAL_OIDC_CLIENT_SECRET", ""),
        oidc_scopes=os.environ.get("MUTUAL_OIDC_SCOPES", "openid profile email"),
        oidc_role_claim=os.environ.get("MUTUAL_OIDC_ROLE_CLAIM", "groups"),
        oidc_role_map=_role_map(os.environ.get("MUTUAL_OIDC_ROLE_MAP", "")),
        oidc_team_claim=os.environ.get("MUTUAL_OIDC_TEAM_CLAIM", ""),
        oidc_label=os.environ.get("MUTUAL_OIDC_LABEL", "single sign-on"),
        oidc_mfa=_choice("MUTUAL_OIDC_MFA", "amr", ("amr", "provider", "mutual")),
        oidc_max_age_minutes=_optional_minutes("MUTUAL_OIDC_MAX_AGE_MINUTES",
                                               os.environ.get("MUTUAL_REAUTH_MINUTES", "15")),
    )
