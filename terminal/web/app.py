"""The web app of the daemon's local server: the kiosk screen at `/` and the admin pages under `/admin/`.

The kiosk's live streams (/events, /camera.mjpg) show employees' names and faces, so they are served only to
the terminal itself (loopback) or to a logged-in admin; the kiosk page and its static files are public.
"""

from __future__ import annotations

import ipaddress
import logging
from http import HTTPStatus

from terminal.web import kiosk
from terminal.web.admin import Admin
from terminal.web.pages import SECURITY_HEADERS, Stream, esc, render, static
from terminal.wsgi import HTTPError, Request, Response, Router

log = logging.getLogger("presensi.web")

MAX_STREAMS = 4  # of the server's 8 threads: the kiosk needs two, an admin preview one


class WebApp:
    def __init__(self, daemon):
        self.daemon = daemon
        self.router = Router()
        self.slots = kiosk.StreamSlots(MAX_STREAMS)
        self.admin = Admin(daemon, self.slots)
        r = self.router
        r.add("GET", "/", self.kiosk_page)
        r.add("GET", "/static/{name}", lambda req: static(req.params["name"]))
        r.add("GET", "/kiosk/state", lambda req: Response.json(kiosk.state(self.daemon)))
        r.add("GET", "/events", self.events)
        r.add("GET", "/camera.mjpg", self.preview)
        self.admin.register(r)

    def kiosk_page(self, req: Request) -> Response:
        cfg = self.daemon.cfg
        return render("kiosk.html", device=esc(cfg.device.name or cfg.device.id), timezone=esc(cfg.device.timezone))

    def _local_or_admin(self, req: Request) -> None:
        if _is_loopback(req.remote_addr) or self.admin.session(req) is not None:
            return
        raise HTTPError(403, "the live kiosk streams are shown only on the terminal itself or to a logged-in admin")

    def events(self, req: Request):
        self._local_or_admin(req)
        return kiosk.events_stream(self.daemon, self.slots)

    def preview(self, req: Request):
        self._local_or_admin(req)
        return kiosk.preview_stream(self.daemon, self.slots)

    def __call__(self, environ, start_response):
        req = Request(environ)
        try:
            resp = self.router.dispatch(req)
        except HTTPError as e:
            resp = _error(req, e.status, e.message, e.headers)
        except Exception as e:  # a bug must not kill the server thread; details go to the log only
            log.exception("unhandled error in %s %s", req.method, req.path)
            resp = _error(req, 500, f"internal error ({type(e).__name__})")
        status = f"{resp.status} {HTTPStatus(resp.status).phrase}"
        if isinstance(resp, Stream):
            start_response(status, [("Content-Type", resp.content_type), *resp.headers.items()])
            return resp.chunks
        start_response(status, [("Content-Length", str(len(resp.body))), *resp.headers.items()])
        return [resp.body]


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _wants_html(req: Request) -> bool:
    return "/api/" not in req.path and "text/html" in (req.header("Accept") or "")


def _error(req: Request, status: int, message: str, headers: dict | None = None) -> Response:
    if not _wants_html(req):
        return Response.json({"error": message}, status, headers)
    body = (f"<!doctype html><html lang='id'><head><meta charset='utf-8'><title>{status}</title></head>"
            f"<body><h1>{status} {esc(HTTPStatus(status).phrase)}</h1><p>{esc(message)}</p>"
            f"<p><a href='/admin/'>Kembali</a></p></body></html>")
    return Response(body.encode(), status, {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS,
                                            **(headers or {})})
