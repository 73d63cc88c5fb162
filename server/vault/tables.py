"""Vault tables: each data subject's data key, wrapped by a key-encryption key."""

from piccolo.columns import UUID, Text, Timestamptz, Varchar
from piccolo.table import Table


class SubjectKey(Table, tablename="vault_subject_key"):
    """A person's data key (AES-256), stored only wrapped by a key-encryption key."""

    subject_id = UUID(primary_key=True, help_text="The person the key encrypts.")
    key_id = Varchar(length=32, help_text="Short id of this data key, named in every field token.")
    kek_id = Varchar(length=64, help_text="The key-encryption key that wraps it.")
    wrapped = Text(secret=True, help_text="AES-GCM wrapped data key, base64url.")
    created_at = Timestamptz()
