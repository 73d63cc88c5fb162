"""Audit tables: the append-only event chain, its head, and the subjects each event names."""

from piccolo.columns import UUID, BigInt, BigSerial, SmallInt, Text, Timestamptz, Varchar
from piccolo.table import Table


class AuditEvent(Table, tablename="audit_event"):
    """One recorded action. Never holds field values, only field names and decisions."""

    seq = BigInt(unique=True, index=True, help_text="Position in the hash chain, from 1.")
    at = Timestamptz()
    request_id = Varchar(length=64)
    face = Varchar(length=16)
    actor_kind = Varchar(length=16, help_text="staff, customer, system or anonymous.")
    actor_id = Varchar(length=64)
    role = Varchar(length=32)
    action = Varchar(length=32, index=True)
    entity = Varchar(length=64)
    subjects = Text(help_text="JSON list of subject pseudonyms.")
    fields = Text(help_text="JSON object: field name -> decision by rule.")
    purpose = Varchar(length=64)
    reason = Text(default="")
    policy_version = Varchar(length=64)
    outcome = Varchar(length=16)
    prev_hash = Varchar(length=64)
    hash = Varchar(length=64)
    format_version = SmallInt(default=1, help_text="How `hash` was computed: 1 (before log identities) or 2.")


class AuditPending(Table, tablename="audit_pending"):
    """An event recorded (committed with the request) but not yet chained: the sequencer numbers it, links it
    into audit_event and deletes this row in the same transaction. No seq and no hash yet."""

    id = BigSerial(primary_key=True, help_text="Recording order; the sequencer takes the oldest first.")
    at = Timestamptz(help_text="When the request recorded the event (kept when it is chained).")
    request_id = Varchar(length=64)
    face = Varchar(length=16)
    actor_kind = Varchar(length=16)
    actor_id = Varchar(length=64)
    role = Varchar(length=32)
    action = Varchar(length=32)
    entity = Varchar(length=64)
    subjects = Text(help_text="JSON list of subject pseudonyms.")
    fields = Text(help_text="JSON object: field name -> decision by rule.")
    purpose = Varchar(length=64)
    reason = Text(default="")
    policy_version = Varchar(length=64)
    outcome = Varchar(length=16)


class AuditSubject(Table, tablename="audit_subject"):
    """Which subject (by pseudonym) an event concerns, so a person's events are found by index."""

    pseudonym = UUID(index=True)
    seq = BigInt(index=True)


class AuditHead(Table, tablename="audit_head"):
    """The chain's head: one row, locked by every append so the chain never forks."""

    name = Varchar(length=16, unique=True)
    seq = BigInt()
    hash = Varchar(length=64)
    updated_at = Timestamptz()
    log_id = Varchar(length=36, default="", help_text="This installation's log identity, made once; hashed into "
                     "every format-2 event and signed into every checkpoint.")


class AuditCheckpoint(Table, tablename="audit_checkpoint"):
    """A signed statement that the chain's event `seq` had hash `hash`: Ed25519 over checkpoint_message."""

    seq = BigInt(unique=True, help_text="The event whose hash is signed.")
    hash = Varchar(length=64)
    at = Timestamptz(help_text="When the checkpoint was signed.")
    key_id = Varchar(length=32, help_text="First 16 hex digits of sha256 of the raw public key.")
    public_key = Text(help_text="Base64 of the raw Ed25519 public key.")
    signature = Text(help_text="Base64 of the Ed25519 signature.")
    format_version = SmallInt(default=1, help_text="Which checkpoint message was signed: 1, or 2 (with the log id).")
    log_id = Varchar(length=36, default="", help_text="The log the checkpoint belongs to (format 2).")
