from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar

ID = "2026-11-25T19:25:58:132326"
VERSION = "1.38.0"
DESCRIPTION = "Recovery codes get a salted argon2id hash, which needs a longer column"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="identity", description=DESCRIPTION
    )

    manager.alter_column(
        table_class_name="RecoveryCode",
        tablename="identity_recovery_code",
        column_name="code_hash",
        db_column_name="code_hash",
        params={"length": 128},
        old_params={"length": 64},
        column_class=Varchar,
        old_column_class=Varchar,
        schema=None,
    )

    return manager
