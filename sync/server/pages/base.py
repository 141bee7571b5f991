"""What every page of the central server shares: the Jinja2 templates (one base template with the
navigation), the session behind the cookie, `require_role(...)` for a route, checked form bodies (CSRF
token, same origin, a pydantic model), error pages in Bahasa Indonesia, and the display formats.

A new page is a module beside this one with an APIRouter whose routes depend on `require_role("bkpsdm")`
(or another role; the admin passes every gate) and render a template that extends base.html; its nav entry
goes into NAV. Text that came from a terminal goes through the `shown` filter (control characters made
visible) and Jinja2's autoescape; nothing is inserted into HTML unescaped.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from sync import asgi

from .. import accounts, display

COOKIE = "presensi_server"
LOGIN_COOKIE = "presensi_server_login"  # double-submit token of the login form (there is no session yet)
FORM_LIMIT = 16 * 1024  # a form of a few short fields; the body-limit middleware enforces it (sync/asgi.py)

ZONE_NAMES = {"Asia/Jakarta": "WIB", "Asia/Makassar": "WITA", "Asia/Jayapura": "WIT"}

# Navigation, per role that may open the page (the admin sees every entry).
NAV = (("/fleet", "Perangkat", ("diskominfo",)), ("/punches", "Presensi", ("bkpsdm",)),
       ("/recap", "Rekap bulanan", ("bkpsdm",)), ("/accounts", "Akun", ()))
HOME = {"admin": "/fleet", "diskominfo": "/fleet", "bkpsdm": "/punches"}

SECURITY_HEADERS = {
    # nothing loads from outside the server: it works inside the regency's network, and an injected
    # script or style would have nowhere to come from
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Settings:
    """How the pages are run: when a terminal counts as silent, and the timezone times are shown in."""
    silent_after_s: float = 4 * 3600.0
    timezone: str = "Asia/Jakarta"


def settings(request: Request) -> Settings:
    return getattr(request.app.state, "pages", None) or Settings()


# -- templates and formats ------------------------------------------------------------------------------

@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("sync.server.pages", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["shown"] = lambda v, limit=300: display.safe(v, limit)
    env.filters["duration"] = duration
    return env


def duration(seconds: float | None) -> str:
    """3 jam 5 menit, 2 hari 4 jam, 8 detik."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s} detik"
    if s < 3600:
        return f"{s // 60} menit"
    if s < 86400:
        return f"{s // 3600} jam" + (f" {s % 3600 // 60} menit" if s % 3600 // 60 else "")
    return f"{s // 86400} hari" + (f" {s % 86400 // 3600} jam" if s % 86400 // 3600 else "")


def local_time(ns: int | None, zone: str) -> str:
    if not ns:
        return "-"
    when = dt.datetime.fromtimestamp(ns / 1e9, ZoneInfo(zone))
    return when.strftime("%d-%m-%Y %H.%M.%S") + " " + ZONE_NAMES.get(zone, zone)


def render(request: Request, name: str, status: int = 200, headers: dict | None = None, **context) -> Response:
    sess: accounts.Session | None = getattr(request.state, "session", None)
    zone = settings(request).timezone
    nav = [(href, label) for href, label, roles in NAV if sess and (sess.role == "admin" or sess.role in roles)]
    body = environment().get_template(name).render(
        session=sess, nav=nav, path=request.url.path, when=lambda ns: local_time(ns, zone), **context)
    return Response(body.encode("utf-8"), status, {**SECURITY_HEADERS, **(headers or {})},
                    media_type="text/html; charset=utf-8")


def redirect(location: str, headers: dict | None = None) -> Response:
    return Response(b"", 303, {"Location": location, "Cache-Control": "no-store", **(headers or {})})


# -- cookies, sessions, roles -----------------------------------------------------------------------------

def read_cookie(request: Request, name: str) -> str | None:
    try:
        jar = SimpleCookie(request.headers.get("Cookie") or "")
    except CookieError:
        return None
    return jar[name].value if name in jar else None


def cookie_header(request: Request, name: str, value: str, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if request.url.scheme == "https":
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_session(request: Request) -> accounts.Session | None:
    sess = accounts.session(request.app.store, read_cookie(request, COOKIE))
    request.state.session = sess
    return sess


def require_role(*roles: str):
    """Dependency of a page: the logged-in session, when its role is one of `roles` (or admin). Without a
    login a browser is sent to the login page; a wrong role gets 403 (audited)."""
    def gate(request: Request) -> accounts.Session:
        sess = current_session(request)
        if sess is None:
            raise HTTPException(303, "silakan masuk terlebih dahulu", {"Location": "/login"})
        if sess.role != "admin" and sess.role not in roles:
            accounts.audit(request.app.store, sess.username, "forbidden", request.url.path, {"role": sess.role},
                           client(request))
            raise HTTPException(403, "Akses ditolak: halaman ini bukan untuk peran " + sess.role)
        return sess
    return gate


def check_origin(request: Request) -> None:
    """A form posted from another site is refused (SameSite=Strict already keeps the cookie off it)."""
    origin = request.headers.get("Origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != (request.headers.get("Host") or "")):
        raise HTTPException(403, "Permintaan dari situs lain ditolak")


async def form_fields(request: Request) -> dict[str, str]:
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
    if ctype not in ("application/x-www-form-urlencoded", ""):
        raise HTTPException(415, "Formulir harus dikirim sebagai application/x-www-form-urlencoded")
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "Formulir bukan UTF-8") from None
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def one_problem(e: ValidationError) -> str:
    first = e.errors()[0]
    field = ".".join(str(x) for x in first.get("loc", ())) or "formulir"
    return f"Isian '{field}' tidak valid: {first.get('msg', '')}"


class Posted:
    """Dependency of a POST route: its form, after the session's CSRF token and the origin were checked,
    validated by `model`. Declare it after `require_role(...)` (it needs the session that set)."""

    def __init__(self, model: type[BaseModel]):
        self.model = model

    async def __call__(self, request: Request) -> BaseModel:
        sess: accounts.Session | None = getattr(request.state, "session", None)
        if sess is None:
            raise HTTPException(303, "silakan masuk terlebih dahulu", {"Location": "/login"})
        check_origin(request)
        fields = await form_fields(request)
        if not accounts.tokens_equal(fields.get("csrf"), sess.csrf):
            await run_in_threadpool(accounts.audit, request.app.store, sess.username, "csrf-refused",
                                    request.url.path, {}, client(request))
            raise HTTPException(403, "Token formulir (CSRF) hilang atau salah: muat ulang halaman lalu coba lagi")
        try:
            return self.model.model_validate(fields)
        except ValidationError as e:
            raise HTTPException(400, one_problem(e)) from None


def form_route(nbytes: int = FORM_LIMIT) -> dict:
    """`openapi_extra=` of a form route: its body limit (the key of sync/asgi.py's BodyLimit)."""
    return asgi.limit(nbytes)


def error_page(request: Request, status: int, message: str, headers: dict | None) -> Response | None:
    """Errors of the pages as pages (Bahasa Indonesia); the device API keeps its JSON errors."""
    if request.url.path.startswith("/api/"):
        return None
    if status == 303 and headers and "Location" in headers:
        return redirect(headers["Location"])
    if getattr(request.state, "session", None) is None and status != 429:
        try:
            current_session(request)
        except Exception:  # the database is the problem: show the error without the navigation
            request.state.session = None
    title = {400: "Isian tidak valid", 403: "Akses ditolak", 404: "Tidak ditemukan", 405: "Tidak diizinkan",
             413: "Terlalu besar", 415: "Format tidak didukung", 429: "Terlalu banyak percobaan"}.get(status, "Galat")
    extra = {k: v for k, v in (headers or {}).items() if k in ("Retry-After",)}
    return render(request, "error.html", status, extra, title=title, message=message)
