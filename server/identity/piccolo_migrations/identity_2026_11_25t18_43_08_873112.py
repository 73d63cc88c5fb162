from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-25T18:43:08:873112"
VERSION = "1.38.0"
DESCRIPTION = "Failed attempts name their account key, so a lock can be lifted"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="identity", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="SigninFailure",
        tablename="identity_signin_failure",
        column_name="account",
        db_column_name="account",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 64,
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": True,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
