"""The portal ASGI app: `uvicorn portal.app:create_app --factory`."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from portal.routes import route_handlers
from server.web import create_face_app

HERE = Path(__file__).parent


def create_app() -> Litestar:
    return create_face_app("portal", "Portal", route_handlers(), HERE / "templates", HERE / "static")
