"""Environment → frozen settings, read once per process."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    """Where the SQLite file, the development key file and logs live."""
    database_url: str
    """sqlite:///path or postgresql://user@host:port/db."""
    key_file: Path
    """JSON file holding the key-encryption and blind-index keys; never inside the database."""
    dev_mode: bool
    """Development mode: `make run` may create a key file when none exists."""
    policies_dir: Path
    """The reviewed YAML policies."""
    erasure_ledger: Path
    """Append-only list of erased subjects, kept with the keys and outside backups; replayed on restore."""
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

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgres://", "postgresql://"))

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))


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
        session_idle_minutes=int(os.environ.get("MUTUAL_SESSION_IDLE_MINUTES", "30")),
        session_absolute_hours=int(os.environ.get("MUTUAL_SESSION_ABSOLUTE_HOURS", "12")),
        signin_max_failures=int(os.environ.get("MUTUAL_SIGNIN_MAX_FAILURES", "5")),
        signin_window_minutes=int(os.environ.get("MUTUAL_SIGNIN_WINDOW_MINUTES", "15")),
        expected_people=int(os.environ.get("MUTUAL_EXPECTED_PEOPLE", "100000")),
        phone_region=os.environ.get("MUTUAL_PHONE_REGION", "DE"),
        reveal_minutes=int(os.environ.get("MUTUAL_REVEAL_MINUTES", "10")),
        audit_signing_key_file=Path(os.environ.get("MUTUAL_AUDIT_SIGNING_KEY", key_file.parent / "audit-signing.key")),
        audit_retention_days=int(os.environ.get("MUTUAL_AUDIT_RETENTION_DAYS", str(6 * 365))),
    )
