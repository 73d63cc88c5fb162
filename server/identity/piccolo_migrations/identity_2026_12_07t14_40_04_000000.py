from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine.finder import engine_finder
from piccolo.engine.sqlite import SQLiteEngine
from piccolo.table import Table

ID = "2026-12-07T14:40:04:000000"
VERSION = "1.38.0"
DESCRIPTION = "Triggers bump the session generation on every change that can end a session or change its actor"

# What resume_session selects, joins on or filters by, per table; a change to any of them (or a deleted
# row) bumps the generation, and every process clears its session cache. last_seen_at (the touch) and
# bookkeeping columns (totp_last_step, email_index, verified_at, method, device) are left out on purpose.
WATCHED = {
    "identity_session": ("token_hash", "face", "stage", "expires_at", "authenticated_at", "account_id"),
    "identity_staff_account": ("id", "active", "roles", "team", "username", "password_hash", "totp_secret"),
    "identity_customer_account": ("id", "active", "person_id", "password_hash"),
}
BUMP = ("INSERT INTO identity_session_generation (id, value) VALUES (1, 1) "
        "ON CONFLICT (id) DO UPDATE SET value = identity_session_generation.value + 1")


class _Generation(Table, tablename="identity_session_generation"):
    """The table as this migration knows it (not the live class, which may change later)."""


def _sqlite() -> list[str]:
    statements = []
    for table, columns in WATCHED.items():
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
        statements += [
            f"CREATE TRIGGER {table}_generation_delete AFTER DELETE ON {table} FOR EACH ROW BEGIN {BUMP}; END",
            f"CREATE TRIGGER {table}_generation_update AFTER UPDATE OF {', '.join(columns)} ON {table} "
            f"FOR EACH ROW WHEN {changed} BEGIN {BUMP}; END",
        ]
    return statements


def _postgres() -> list[str]:
    # Constraint triggers deferred to commit: the generation row is locked last in its transaction,
    # held only while committing, and never before the audit head, so no lock-order deadlock can arise.
    statements = [
        "CREATE OR REPLACE FUNCTION identity_session_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {BUMP}; PERFORM pg_notify('identity_session_generation', ''); RETURN NULL; END $$"
    ]
    for table, columns in WATCHED.items():
        changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
        statements += [
            f"CREATE CONSTRAINT TRIGGER {table}_generation_delete AFTER DELETE ON {table} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION identity_session_generation_bump()",
            f"CREATE CONSTRAINT TRIGGER {table}_generation_update AFTER UPDATE OF {', '.join(columns)} ON {table} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({changed}) "
            "EXECUTE FUNCTION identity_session_generation_bump()",
        ]
    return statements


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="identity", description=DESCRIPTION)

    async def create_triggers() -> None:
        # Its own migration: Piccolo runs a migration's raw steps before its new tables exist.
        statements = _sqlite() if isinstance(engine_finder(), SQLiteEngine) else _postgres()
        for sql in statements:
            await _Generation.raw(sql)
        await _Generation.raw("INSERT INTO identity_session_generation (id, value) VALUES (1, 1) "
                              "ON CONFLICT (id) DO NOTHING")

    manager.add_raw(create_triggers)

    return manager
