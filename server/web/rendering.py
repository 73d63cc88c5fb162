"""Jinja2 rendering for both faces: a page, or one block of it for htmx (jinja2-fragments)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from jinja2_fragments import render_block
from litestar import Request, Response
from litestar.template.base import csrf_token

from server import timing

SHARED_TEMPLATES = Path(__file__).parent / "templates"


def build_environment(face_templates: Path) -> Environment:
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(face_templates), FileSystemLoader(SHARED_TEMPLATES)]),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def is_fragment_request(request: Request) -> bool:
    """An htmx request for part of a page (a boosted navigation wants the whole page)."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def render(request: Request, template: str, *, block: str | None = None, status_code: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> Response[str]:
    env: Environment = request.app.state.jinja
    context = {
        "request": request,
        "actor": request.scope.get("user"),
        "face": request.app.state.face,
        "face_title": request.app.state.face_title,
        "csrf_token": csrf_token({"request": request}),
        **context,
    }
    with timing.phase("render"):
        if block is not None:
            html = render_block(env, template, block, **context)
        else:
            html = env.get_template(template).render(**context)
    return Response(html, media_type="text/html", status_code=status_code, headers=headers)
