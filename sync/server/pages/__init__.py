"""The central server's pages for people (Diskominfo, BKPSDM, the admin): server-rendered HTML in Bahasa
Indonesia behind a login, one module per page group. `router()` is all of them and their style sheet;
base.py is what a new page builds on (templates, `require_role`, checked forms)."""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from . import accounts_page, fleet, login, punches, recap
from .base import SECURITY_HEADERS, Settings, error_page, require_role

__all__ = ["Settings", "error_page", "require_role", "router"]


@functools.cache
def _css() -> bytes:
    return resources.files(__package__).joinpath("static", "server.css").read_bytes()


def style() -> Response:
    return Response(_css(), 200, {**SECURITY_HEADERS, "Cache-Control": "max-age=3600"}, media_type="text/css")


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)
    r.add_api_route("/static/server.css", style, methods=["GET"])
    for module in (login, fleet, punches, recap, accounts_page):
        r.include_router(module.router())
    return r
