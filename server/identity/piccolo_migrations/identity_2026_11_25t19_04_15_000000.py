from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-25T19:04:15:000000"
VERSION = "1.38.0"
DESCRIPTION = "Sessions from before authenticated_at were signed in when they were created"


class _Session(Table, tablename="identity_session"):
    """The table as this migration knows it (not the live class, which may change later)."""


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="identity", description=DESCRIPTION)

    async def signed_in_when_created() -> None:
        # Its own migration: Piccolo runs a migration's raw steps before its new columns exist.
        await _Session.raw("UPDATE identity_session SET authenticated_at = created_at WHERE authenticated_at IS NULL")

    manager.add_raw(signed_in_when_created)

    return manager
