"""The backoffice ASGI app: `uvicorn backoffice.app:create_app --factory`."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from backoffice.routes import route_handlers
from server.web import create_face_app

HERE = Path(__file__).parent


def create_app() -> Litestar:
    return create_face_app("backoffice", "Backoffice", route_handlers(), HERE / "templates", HERE / "static")
