"""Backups, and restores that replay the erasure ledger so erased people stay erased."""

from server.backup._files import BackupError, RestoreResult, read_sidecar, sidecar_path
from server.backup._postgres import pg_tool
from server.backup.restore import WITHOUT_LEDGER_FLAG, replay_erasures, restore
from server.backup.take import backup

__all__ = [
    "WITHOUT_LEDGER_FLAG",
    "BackupError",
    "RestoreResult",
    "backup",
    "pg_tool",
    "read_sidecar",
    "replay_erasures",
    "restore",
    "sidecar_path",
]
