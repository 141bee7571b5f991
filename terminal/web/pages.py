"""Responses the web pages need: HTML from package templates, redirects, static files from package data,
and streams (Server-Sent Events, MJPEG) that are written as they are produced. Starlette responses only:
the web-server start-up code puts these pages on an app built with the shared plumbing (sync/asgi.py)."""

from __future__ import annotations

import functools
import html
import mimetypes
import string
from collections.abc import Callable, Iterator
from importlib import resources

from fastapi import HTTPException
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

SECURITY_HEADERS = {
    # Everything is served from this terminal: no external script, style, font or image may load.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make Chromium send Origin: null
    "Cache-Control": "no-store",
}


def stream(chunks: Iterator[bytes], release: Callable[[], None], media_type: str,
           headers: dict | None = None) -> StreamingResponse:
    """A response whose body is produced over time by the blocking iterator `chunks` (run in the thread
    pool, one chunk at a time, each sent to the client as it is yielded). `release` is called exactly once
    when the stream ends: finished, the client gone (the server cancels the body) or the server stopping."""
    released = False

    def release_once() -> None:
        nonlocal released
        if not released:
            released = True
            release()

    async def body():
        try:
            async for chunk in iterate_in_threadpool(chunks):
                yield chunk
        finally:
            try:
                close = getattr(chunks, "close", None)
                if close:
                    close()
            finally:
                release_once()

    return StreamingResponse(body(), media_type=media_type, headers=headers)


@functools.cache
def template(name: str) -> string.Template:
    return string.Template(resources.files("terminal.web").joinpath("templates", name).read_text("utf-8"))


def render(name: str, status: int = 200, headers: dict | None = None, **values) -> Response:
    """Fill a template; values are inserted as given, so callers escape text with `esc`."""
    body = template(name).substitute(**values)
    return Response(body.encode("utf-8"), status, {**SECURITY_HEADERS, **(headers or {})},
                    media_type="text/html; charset=utf-8")


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def redirect(location: str, headers: dict | None = None) -> Response:
    return Response(b"", 303, {"Location": location, "Cache-Control": "no-store", **(headers or {})})


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    return JSONResponse(data, status, headers)


STATIC_NAMES = frozenset({"kiosk.css", "kiosk.js", "admin.css", "admin.js"})


@functools.lru_cache(maxsize=16)
def _static_bytes(name: str) -> bytes:
    return resources.files("terminal.web").joinpath("static", name).read_bytes()


def static(name: str) -> Response:
    if name not in STATIC_NAMES:  # an explicit list: no path tricks, no directory listing
        raise HTTPException(404, f"no such file: {name}")
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype.endswith("javascript"):
        ctype += "; charset=utf-8"
    return Response(_static_bytes(name), 200, {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
                    media_type=ctype)
