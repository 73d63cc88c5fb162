"""Test set-up: a private var dir, fresh keys and a migrated database (SQLite, or PostgreSQL when
MUTUAL_TEST_DATABASE=postgres), configured before any Mutual module is imported."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

_VAR = Path(tempfile.mkdtemp(prefix="mutual-test-"))
os.environ["MUTUAL_VAR_DIR"] = str(_VAR)
os.environ["MUTUAL_KEY_FILE"] = str(_VAR / "keys.json")
os.environ.pop("MUTUAL_KEYS", None)
os.environ.pop("MUTUAL_DEV", None)
# Mail goes to the outbox in tests; outside development only this explicit flag allows that.
os.environ["MUTUAL_MAIL_DEV_OUTBOX"] = "1"
os.environ.pop("MUTUAL_SMTP_HOST", None)
# The faces' public origins, as production sets them (the face tests speak to https://testserver.local).
os.environ["MUTUAL_PORTAL_ORIGIN"] = os.environ["MUTUAL_BACKOFFICE_ORIGIN"] = "https://testserver.local"
# Events are chained before the recording call returns, so tests may read audit_event at once; the
# sequencer's own tests switch to background.
os.environ["MUTUAL_AUDIT_SEQUENCER"] = "eager"
# Providers re-check the key file on every use, so tests see another process's rotation at once.
os.environ["MUTUAL_KEY_FOLLOW_SECONDS"] = "0"

_PG_ADMIN_URL = os.environ.get("MUTUAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_PG_DB = f"mutual_test_{uuid.uuid4().hex[:10]}"
USE_POSTGRES = os.environ.get("MUTUAL_TEST_DATABASE") == "postgres"


def _pg_url(database: str) -> str:
    base, _, _ = _PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if USE_POSTGRES:
    asyncio.run(_pg_admin(f'CREATE DATABASE "{_PG_DB}"'))
    os.environ["MUTUAL_DATABASE_URL"] = _pg_url(_PG_DB)
else:
    os.environ["MUTUAL_DATABASE_URL"] = f"sqlite:///{_VAR / 'test.sqlite3'}"

from server.vault.keys import new_key_document  # noqa: E402

(_VAR / "keys.json").write_text(json.dumps(new_key_document()))

from server.audit.checkpoints import write_signing_key  # noqa: E402

write_signing_key(_VAR / "audit-signing.key")


def _pin_audit_key() -> None:
    """Pin the test signing key, as an operator does, so verification can say intact; no timer by default."""
    import base64

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((_VAR / "audit-signing.key").read_bytes(), password=None)
    raw_public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    os.environ["MUTUAL_AUDIT_PUBLIC_KEY"] = base64.b64encode(raw_public).decode()
    os.environ["MUTUAL_AUDIT_SIGN_SECONDS"] = "0"
    os.environ.pop("MUTUAL_AUDIT_WITNESS", None)


_pin_audit_key()

ALL_TABLES = (
    "crm_note", "crm_person", "crm_organisation", "vault_subject_key", "identity_session",
    "identity_signin_failure", "identity_customer_account", "identity_staff_account",
    "identity_recovery_code", "identity_passkey", "identity_external", "identity_email_token",
    "identity_challenge",
    "audit_subject", "audit_event", "audit_checkpoint", "audit_pending",
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if USE_POSTGRES:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{_PG_DB}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def migrated() -> None:
    from server.setup import migrate

    await migrate()


@pytest.fixture
async def db(migrated: None) -> AsyncIterator[None]:
    """An empty, migrated database for each test (every table emptied, the audit chain reset), and the
    key file put back afterwards (an erasure closes a crypto-period, which rewrites it)."""
    from server.audit.chain import GENESIS
    from server.db import raw, write_transaction

    async with write_transaction():
        for table in ALL_TABLES:
            await raw(f"DELETE FROM {table}")
        await raw("UPDATE audit_head SET seq = 0, hash = {}", GENESIS)
    keys = _VAR / "keys.json"
    saved = keys.read_bytes()
    yield
    if keys.read_bytes() != saved:
        keys.write_bytes(saved)


@pytest.fixture
def var_dir() -> Path:
    return _VAR
