"""Piccolo configuration: the engine from MUTUAL_DATABASE_URL and the apps of each area."""

from __future__ import annotations

from urllib.parse import urlparse

from piccolo.conf.apps import AppRegistry
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine

from server.settings import get_settings
from server.sqlite_engine import MutualSQLiteEngine


def build_engine(database_url: str) -> Engine:
    if database_url.startswith(("postgres://", "postgresql://")):
        url = urlparse(database_url)
        return PostgresEngine(
            config={
                "host": url.hostname or "127.0.0.1",
                "port": url.port or 5432,
                "user": url.username or "postgres",
                "password": url.password or "",
                "database": (url.path or "/mutual").lstrip("/"),
                # A commit returns only once it is on disk: audit events are durable when recorded.
                "server_settings": {"synchronous_commit": "on"},
            },
            log_queries=False,
        )
    if database_url.startswith("sqlite:///"):
        # timeout: wait for the other process's write lock instead of failing at once.
        return MutualSQLiteEngine(path=database_url.removeprefix("sqlite:///"), timeout=30)
    raise SystemExit(
        f"MUTUAL_DATABASE_URL {database_url.split(':', 1)[0]}:… is not supported; "
        "use sqlite:///path/to/file.sqlite3 or postgresql://user@host:5432/db"
    )


DB = build_engine(get_settings().database_url)

APP_REGISTRY = AppRegistry(
    apps=[
        "server.vault.piccolo_app",
        "server.identity.piccolo_app",
        "server.crm.piccolo_app",
        "server.audit.piccolo_app",
    ]
)
