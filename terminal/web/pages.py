"""Responses the web pages need beyond terminal/wsgi.py: HTML from package templates, redirects, static
files from package data, and streams (Server-Sent Events, MJPEG) that are written as they are produced."""

from __future__ import annotations

import functools
import html
import mimetypes
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

from terminal.wsgi import HTTPError, Response

SECURITY_HEADERS = {
    # Everything is served from this terminal: no external script, style, font or image may load.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make Chromium send Origin: null
    "Cache-Control": "no-store",
}


@dataclass
class Stream:
    """A response whose body is produced over time; each chunk is flushed to the client as it is yielded."""

    chunks: Iterable[bytes]
    content_type: str
    status: int = 200
    headers: dict = field(default_factory=dict)


@functools.cache
def template(name: str) -> string.Template:
    return string.Template(resources.files("terminal.web").joinpath("templates", name).read_text("utf-8"))


def render(name: str, status: int = 200, headers: dict | None = None, **values) -> Response:
    """Fill a template; values are inserted as given, so callers escape text with `esc`."""
    body = template(name).substitute(**values)
    return Response(body.encode("utf-8"), status, {"Content-Type": "text/html; charset=utf-8",
                                                   **SECURITY_HEADERS, **(headers or {})})


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def redirect(location: str, headers: dict | None = None) -> Response:
    return Response(b"", 303, {"Location": location, "Cache-Control": "no-store", **(headers or {})})


STATIC_NAMES = frozenset({"kiosk.css", "kiosk.js", "admin.css", "admin.js"})


@functools.lru_cache(maxsize=16)
def _static_bytes(name: str) -> bytes:
    return resources.files("terminal.web").joinpath("static", name).read_bytes()


def static(name: str) -> Response:
    if name not in STATIC_NAMES:  # an explicit list: no path tricks, no directory listing
        raise HTTPError(404, f"no such file: {name}")
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype.endswith("javascript"):
        ctype += "; charset=utf-8"
    return Response(_static_bytes(name), 200, {"Content-Type": ctype, "Cache-Control": "no-cache",
                                               "X-Content-Type-Options": "nosniff"})
