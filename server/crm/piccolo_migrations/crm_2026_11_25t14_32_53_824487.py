"""A composite index for keyset paging of people, newest first, on (created_at, id)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-11-25T14:32:53:824487"
VERSION = "1.38.0"
DESCRIPTION = "keyset index on people"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="crm", description=DESCRIPTION)

    async def run():
        from piccolo.querystring import QueryString

        from server.crm.tables import Person

        await Person._meta.db.run_querystring(
            QueryString("CREATE INDEX IF NOT EXISTS crm_person_keyset ON crm_person (created_at, id)")
        )

    async def run_backwards():
        from piccolo.querystring import QueryString

        from server.crm.tables import Person

        await Person._meta.db.run_querystring(QueryString("DROP INDEX IF EXISTS crm_person_keyset"))

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
