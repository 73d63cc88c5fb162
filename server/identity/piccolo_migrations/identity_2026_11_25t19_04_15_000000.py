from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-25T19:04:15:000000"
VERSION = "1.38.0"
DESCRIPTION = "Sessions from before authenticated_at were signed in when they were created"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="identity", description=DESCRIPTION)

    async def signed_in_when_created() -> None:
        # Its own migration: Piccolo runs a migration's raw steps before its new columns exist.
        from server.identity.tables import Session

        await Session.update({Session.authenticated_at: Session.created_at}, force=True)

    manager.add_raw(signed_in_when_created)

    return manager
