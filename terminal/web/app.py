"""The web app of the daemon's local server: the kiosk screen at `/` and the admin pages under `/admin/`.

`WebApp(daemon).router` holds the routes (FastAPI's APIRouter); the web-server start-up code puts them on an
app with the shared plumbing (JSON errors, body limits) and `error_page` as its error renderer, so a
browser gets an HTML page for an error and scripts get {"error": ...}.

The kiosk's live streams (/events, /camera.mjpg) show employees' names and faces, so they are served only to
the terminal itself (loopback without proxy headers, terminal/web/clients.py) or to a logged-in admin; the
kiosk page and its static files are public.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.responses import HTMLResponse, Response

from terminal.web import clients, kiosk, workcode
from terminal.web.admin import HTML, Admin
from terminal.web.pages import SECURITY_HEADERS, esc, json_response, render, static

log = logging.getLogger("presensi.web")

MAX_STREAMS = 4  # the kiosk needs two, an admin preview one; each keeps a pool thread waiting for data
STREAM_ERRORS = {403: {"description": "not the terminal itself and not a logged-in admin"},
                 503: {"description": "too many live streams, the camera is off, or the terminal is stopping"}}


class WebApp:
    def __init__(self, daemon):
        self.daemon = daemon
        self.slots = kiosk.StreamSlots(MAX_STREAMS)
        self.admin = Admin(daemon, self.slots)
        self.router = APIRouter()
        r = self.router
        r.add_api_route("/", self.kiosk_page, methods=["GET"], response_class=HTMLResponse,
                        responses={200: {"description": "the kiosk screen", **HTML}})
        r.add_api_route("/static/{name}", self.static_file, methods=["GET"], response_class=Response,
                        responses={200: {"description": "a script or style sheet of the pages", "content": {
                            "text/css": {}, "text/javascript": {}}}, 404: {"description": "no such file"}})
        r.add_api_route("/kiosk/state", self.kiosk_state, methods=["GET"], response_model=None,
                        responses={200: {"description": "what a freshly loaded kiosk page starts from",
                                         "content": {"application/json": {"schema": {"type": "object"}}}}})
        r.add_api_route("/events", self.events, methods=["GET"], response_class=Response,
                        responses={200: {"description": "Server-Sent Events: status, prompt, decision",
                                         "content": {"text/event-stream": {}}}, **STREAM_ERRORS})
        r.add_api_route("/camera.mjpg", self.preview, methods=["GET"], response_class=Response,
                        responses={200: {"description": "the camera preview (MJPEG)",
                                         "content": {"multipart/x-mixed-replace": {}}}, **STREAM_ERRORS})
        r.add_api_route("/kiosk/work-code", self.work_code, methods=["POST"], response_model=None,
                        openapi_extra={"x-body-limit": workcode.BODY_LIMIT},
                        dependencies=[Depends(workcode.own_screen_only)],
                        responses={200: {"description": "the code is armed for the next punch, or given to the "
                                                        "punch that waits for it",
                                         "content": {"application/json": {"schema": {"type": "object"}}}},
                                   **workcode.ERRORS})
        self.admin.register(r)

    def kiosk_page(self) -> Response:
        cfg = self.daemon.cfg
        return render("kiosk.html", device=esc(cfg.device.name or cfg.device.id), timezone=esc(cfg.device.timezone))

    def static_file(self, name: str) -> Response:
        return static(name)

    def kiosk_state(self) -> Response:
        return json_response(kiosk.state(self.daemon))

    def work_code(self, request: Request, body: workcode.Choice) -> Response:
        return workcode.choose(self.daemon, request, body)

    def _local_or_admin(self, req: Request) -> None:
        if clients.is_local(req) or self.admin.session(req) is not None:
            return
        raise HTTPException(403, "the live kiosk streams are shown only on the terminal itself or to a logged-in "
                                 "admin")

    def events(self, request: Request) -> Response:
        self._local_or_admin(request)
        return kiosk.events_stream(self.daemon, self.slots)

    def preview(self, request: Request) -> Response:
        self._local_or_admin(request)
        return kiosk.preview_stream(self.daemon, self.slots)

    @staticmethod
    def error_page(req: Request, status: int, message: str, headers: dict | None = None) -> Response | None:
        """An error as an HTML page for a browser (it asked for text/html); None: the JSON answer."""
        if "/api/" in req.url.path or "text/html" not in (req.headers.get("Accept") or ""):
            return None
        body = (f"<!doctype html><html lang='id'><head><meta charset='utf-8'><title>{status}</title></head>"
                f"<body><h1>{status} {esc(HTTPStatus(status).phrase)}</h1><p>{esc(message)}</p>"
                f"<p><a href='/admin/'>Kembali</a></p></body></html>")
        return Response(body.encode(), status, {**SECURITY_HEADERS, **(headers or {})},
                        media_type="text/html; charset=utf-8")
