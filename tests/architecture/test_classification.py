"""Every column of every table is classified in policies/fields.yml, and nothing stale is left there."""

from __future__ import annotations

from piccolo.conf.apps import Finder

from server.kernel import get_kernel


def _columns() -> dict[str, set[str]]:
    return {table._meta.tablename: {c._meta.db_column_name for c in table._meta.columns}
            for table in Finder().get_table_classes()}


def test_every_table_column_is_classified_in_fields_yml() -> None:
    policies = get_kernel().policies
    missing = [f"{table}.{column}" for table, columns in sorted(_columns().items()) for column in sorted(columns)
               if table not in policies.tables or column not in policies.fields(table)]
    assert not missing, ("columns without a classification in policies/fields.yml (add category, sensitivity, "
                         f"encrypted, searchable and retention or personal: false): {missing}")


def test_fields_yml_names_no_column_that_does_not_exist() -> None:
    policies = get_kernel().policies
    columns = _columns()
    stale = [f"{table}.{field}" for table in sorted(policies.tables) for field in policies.fields(table)
             if field not in columns.get(table, set())]
    assert not stale, f"policies/fields.yml classifies columns no table has: {stale}"


def test_every_encrypted_personal_column_is_stored_as_a_secret_column() -> None:
    policies = get_kernel().policies
    tables = {t._meta.tablename: t for t in Finder().get_table_classes()}
    plain = [f"{table}.{field}" for table in policies.tables for field, spec in policies.fields(table).items()
             if spec.encrypted and spec.personal and not tables[table]._meta.get_column_by_name(field)._meta.secret]
    assert not plain, f"encrypted personal columns not marked secret=True in their table: {plain}"
