"""The admin pages under /admin/: login, the gate every other page passes, the dashboard, recent punches
and the operator PIN punch. Fault reports, enrolment, export and diagnostics are in admin_tools.py.

Gate: no session → HTML pages redirect to the login page, API paths (/admin/api/…) answer 401. Every
POST must carry the session's CSRF token (form field `csrf` or header X-CSRF-Token) and, when the browser
sends an Origin, come from this very host. Every action an admin takes is written to the audit table.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import anyio
from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from terminal.log import punchlog
from terminal.web import auth, clients, forms
from terminal.web.apel import ApelPage
from terminal.web.forms import form_body
from terminal.web.pages import esc, redirect, render

log = logging.getLogger("presensi.web")

COOKIE = "presensi_admin"
LOGIN_COOKIE = "presensi_login"  # double-submit token for the login form (there is no session yet)
NAV = (("/admin/", "Kesehatan"), ("/admin/punches", "Presensi"), ("/admin/faults", "Lapor kerusakan"),
       ("/admin/enrol", "Daftar wajah"), ("/admin/apel", "Apel"), ("/admin/export", "Ekspor USB"))
PUNCH_LIMIT = 50
PASSWORD_CHECKS = 2  # scrypt checks running at once


# What the generated OpenAPI document says of the pages (the kiosk server's /openapi.json).
HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
ERROR = {"content": {"application/json": {"schema": {"type": "object", "required": ["error"],
                                                     "properties": {"error": {"type": "string"}}}},
                     "text/html": {"schema": {"type": "string"}}}}
PAGE = {200: {"description": "the page", **HTML}, 303: {"description": "not logged in: to /admin/login"}}
API = {200: {"description": "JSON answer", "content": {"application/json": {"schema": {"type": "object"}}}},
       401: {"description": "not logged in", **ERROR}}
POSTED = {400: {"description": "malformed form", **ERROR}, 403: {"description": "missing or wrong CSRF token, "
                                                                  "or a cross-site request", **ERROR},
          413: {"description": "body too large", **ERROR}, 415: {"description": "not a form", **ERROR}}


def cookie_header(name: str, value: str, req: Request, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if req.url.scheme == "https":
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def read_cookie(req: Request, name: str) -> str | None:
    try:
        jar = SimpleCookie(req.headers.get("Cookie") or "")
    except CookieError:
        return None
    return jar[name].value if name in jar else None


class Admin:
    def __init__(self, daemon, slots):
        from terminal.web.admin_tools import Tools

        self.daemon, self.cfg = daemon, daemon.cfg
        self.sessions = auth.Sessions()
        # each scrypt check takes ~32 MiB: logins from many addresses at once must not take the Pi's memory
        self.checks = threading.BoundedSemaphore(PASSWORD_CHECKS)
        self.tools = Tools(self, slots)

    # -- routing and the gate --------------------------------------------------------------------------

    def register(self, router: APIRouter) -> None:
        router.add_api_route("/admin", lambda: redirect("/admin/"), methods=["GET"], include_in_schema=False)
        router.add_api_route("/admin/login", self.login_form, methods=["GET"], response_class=HTMLResponse,
                             responses={200: {"description": "the login form", **HTML}})
        router.add_api_route("/admin/login", self.login, methods=["POST"], response_class=HTMLResponse,
                             openapi_extra=form_body(forms.LOGIN_LIMIT),
                             responses={303: {"description": "logged in: to /admin/"},
                                        401: {"description": "wrong password", **HTML},
                                        429: {"description": "too many failures: locked for a while", **HTML},
                                        503: {"description": "no admin password set", **HTML}, **POSTED})
        self.page(router, "POST", "/admin/logout", self.logout, form_body(forms.FORM_LIMIT))
        self.page(router, "GET", "/admin/", self.dashboard)
        self.page(router, "GET", "/admin/punches", self.punches)
        self.page(router, "POST", "/admin/punches", self.pin_punch, form_body(forms.FORM_LIMIT))
        self.tools.register(router)
        ApelPage(self).register(router)

    def page(self, router: APIRouter, method: str, path: str, handler, openapi_extra: dict | None = None,
             responses: dict | None = None) -> None:
        """A gated route: HTML pages (or JSON under /admin/api/) for a logged-in admin."""
        api = path.startswith("/admin/api/")
        documented = {**(API if api else PAGE), **(POSTED if method == "POST" else {}), **(responses or {})}
        router.add_api_route(path, self.gate(handler), methods=[method], openapi_extra=openapi_extra,
                             responses=documented, response_class=Response if api else HTMLResponse,
                             name=handler.__name__)

    def session(self, req: Request) -> auth.Session | None:
        sess = self.sessions.get(read_cookie(req, COOKIE))
        if sess is not None and sess.data.get("stamp") != auth.password_stamp(self.cfg.state_dir):
            self.sessions.end(sess.token)  # the password was changed since this login: log in again
            return None
        return sess

    def gate(self, handler):
        """Wrap a handler: a valid session, and for POST a valid CSRF token and same-origin request. The
        handler itself (SQLite, the camera) runs in the server's thread pool."""
        async def guarded(request: Request) -> Response:
            sess = self.session(request)
            if sess is None:
                if request.url.path.startswith("/admin/api/"):
                    raise HTTPException(401, "log in at /admin/login first", {"WWW-Authenticate": "Session"})
                return redirect("/admin/login")
            form, files = ({}, {})
            if request.method == "POST":
                _check_origin(request)
                if (request.headers.get("Content-Type") or "").startswith("application/json"):
                    form = _json_form(await request.body())
                else:
                    form, files = await forms.parse(request)
                token = request.headers.get("X-CSRF-Token") or form.get("csrf")
                if not auth.tokens_equal(token if isinstance(token, str) else None, sess.csrf):
                    self.audit(sess.user, "csrf-refused", {"path": request.url.path,
                                                           "client": _client(request)})
                    raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
            return await run_in_threadpool(handler, request, sess, form, files)
        return guarded

    def audit(self, actor: str, action: str, details: dict | None = None) -> None:
        """Append to the audit table through this thread's own connection (never share one for writes)."""
        try:
            with punchlog.PunchLog(self.cfg.state_dir) as plog:
                plog.audit(actor, action, details or {})
        except Exception:  # the action itself already happened; losing its audit line must be visible
            log.exception("could not write the audit entry for %s %s", actor, action)

    def layout(self, sess: auth.Session, title: str, body: str, status_code: int = 200) -> Response:
        nav = "".join(f"<a href='{href}'>{esc(label)}</a>" for href, label in NAV)
        return render("admin.html", status_code, title=esc(title), nav=nav, body=body, csrf=esc(sess.csrf),
                      user=esc(sess.user), device=esc(self.cfg.device.name or self.cfg.device.id))

    # -- login ----------------------------------------------------------------------------------------

    def login_form(self, request: Request) -> Response:
        return self.login_page(request)

    def login_page(self, req: Request, message: str = "", status_code: int = 200) -> Response:
        token = read_cookie(req, LOGIN_COOKIE)
        headers = {}
        if not token:
            token = secrets.token_urlsafe(32)
            headers["Set-Cookie"] = cookie_header(LOGIN_COOKIE, token, req, max_age=3600)
        note = f"<p class='error' role='alert'>{esc(message)}</p>" if message else ""
        return render("login.html", status_code, headers, csrf=esc(token), message=note,
                      device=esc(self.cfg.device.name or self.cfg.device.id))

    async def login(self, request: Request) -> Response:
        _check_origin(request)
        form, _ = await forms.parse(request)
        if not auth.tokens_equal(form.get("csrf"), read_cookie(request, LOGIN_COOKIE)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the login page and try again")
        client = _client(request)
        wait = self.sessions.turn(client)
        if wait is None:  # this address queued a minute of guesses: refused unchecked, nobody else is
            retry = int(self.sessions.locked(client)) + 1
            return self.login_page(request, f"Terlalu banyak percobaan gagal dari alamat ini. Coba lagi dalam "
                                            f"{retry} detik.", 429)
        if wait:
            await anyio.sleep(wait)  # slowed, not refused: the right password still works; no thread is held
        while not self.checks.acquire(blocking=False):  # queue in the event loop, not in the thread pool
            await anyio.sleep(0.02)
        try:
            return await run_in_threadpool(self._login, request, form, client)
        finally:
            self.checks.release()

    def _login(self, req: Request, form: dict, client: str) -> Response:
        try:
            ok = auth.verify_password(self.cfg.state_dir, form.get("password", ""))
        except auth.PasswordError as e:
            return self.login_page(req, str(e), 503)
        if not ok:
            self.sessions.failed(client)
            self.audit("-", "login-failed", {"client": client})
            return self.login_page(req, "Kata sandi salah.", 401)
        self.sessions.succeeded(client)
        sess = self.sessions.create(auth.ADMIN_USER)
        sess.data["stamp"] = auth.password_stamp(self.cfg.state_dir)
        self.audit(sess.user, "login", {"client": client})
        return redirect("/admin/", {"Set-Cookie": cookie_header(COOKIE, sess.token, req)})

    def logout(self, req, sess, form, files) -> Response:
        self.sessions.end(sess.token)
        self.audit(sess.user, "logout", {})
        return redirect("/admin/login", {"Set-Cookie": cookie_header(COOKIE, "", req, max_age=0)})

    # -- dashboard ------------------------------------------------------------------------------------

    def dashboard(self, req, sess, form, files) -> Response:
        from terminal.web.admin_tools import health_report

        report = health_report(self.daemon)
        rows = "".join(
            f"<tr class='{esc(p['level'])}'><td>{esc(name)}</td><td>{esc(p['level'])}</td>"
            f"<td>{esc(p.get('screen') or p['message'])}</td></tr>" for name, p in report["parts"].items())
        faults = "".join(
            f"<tr><td>{esc(_local(f['realtime_ns'], self.cfg))}</td><td>{esc(f['part'])}</td>"
            f"<td>{esc((f['diagnostics'] or {}).get('screen') or f['message'])}</td></tr>"
            for f in report["open_faults"]) or \
            "<tr><td colspan='3'>Tidak ada gangguan terbuka.</td></tr>"
        ind = report["indicators"]
        summary = (f"<ul class='summary'><li>Waktu: {esc(_when({'utc': ind.get('utc')}, self.cfg))} "
                   f"({'terverifikasi' if ind.get('time_verified') else 'BELUM terverifikasi'})</li>"
                   f"<li>Server pusat: {esc(_online(ind))}</li><li>Antrean kirim: {esc(report['backlog'])}</li>"
                   f"<li>Kontak terakhir: {esc(_contact(report, self.cfg))}</li></ul>")
        body = (f"<h1>Kesehatan terminal</h1>{summary}<h2>Bagian</h2><table id='parts'><tr><th>Bagian</th>"
                f"<th>Status</th><th>Keterangan</th></tr>{rows}</table><h2>Gangguan terbuka</h2>"
                f"<table id='faults'><tr><th>Sejak</th><th>Bagian</th><th>Keterangan</th></tr>{faults}</table>"
                "<p><a class='button' href='/admin/diagnostics.zip'>Unduh paket diagnostik</a></p>")
        return self.layout(sess, "Kesehatan", body)

    # -- punches --------------------------------------------------------------------------------------

    def punches(self, req, sess, form, files, message: str = "") -> Response:
        records = self._recent_punches()
        names = self._names()
        rows = "".join(
            f"<tr><td>{r['seq']}</td><td>{esc(_when(r, self.cfg))}</td><td>{esc(r['employee'])}</td>"
            f"<td>{esc(names.get(r['employee'], ''))}</td><td>{esc(r['method'])}</td>"
            f"<td>{esc(punchlog.kind_of(r) or '-')}</td>"
            f"<td>{esc(_late(r))}</td></tr>" for r in reversed(records)) \
            or "<tr><td colspan='7'>Belum ada presensi.</td></tr>"
        note = f"<p class='notice' role='status'>{esc(message)}</p>" if message else ""
        body = (f"<h1>Presensi terbaru</h1>{note}<form method='post' action='/admin/punches' class='inline'>"
                f"<input type='hidden' name='csrf' value='{esc(sess.csrf)}'><label>Presensi PIN oleh operator: "
                "NIP <input name='employee' required pattern='[A-Za-z0-9._\\-]{1,64}'></label>"
                "<label>Alasan pengecualian (hanya bila daftar pegawai menolak; dicatat) "
                "<input name='override_reason' maxlength='500'></label>"
                "<button type='submit'>Catat</button></form>"
                "<table id='punches'><tr><th>No</th><th>Waktu</th><th>NIP</th><th>Nama</th><th>Cara</th>"
                f"<th>Jenis</th><th>Terlambat (menit)</th></tr>{rows}</table>")
        return self.layout(sess, "Presensi", body)

    def _recent_punches(self) -> list[dict]:
        """The last punches with their corrected times (terminal.timing.timeline), read on this request's own
        connection; without the time service they show the terminal's clock, marked as such."""
        with punchlog.PunchLog(self.cfg.state_dir) as plog:
            head = plog.head()[0]
            records = list(plog.records(after_seq=max(0, head - PUNCH_LIMIT), limit=PUNCH_LIMIT))
            try:
                from terminal.timing import timeline

                return timeline.annotate(plog.conn, records)
            except Exception as e:  # show the list anyway
                log.warning("corrected times unavailable for the punch list: %s", e)
                return records

    def _names(self) -> dict[str, str]:
        from terminal.punch import roster as roster_mod

        try:
            with roster_mod.Roster.open(self.cfg.state_dir) as r:
                return {p["id"]: p.get("name") or "" for p in r.people()}
        except Exception as e:  # a damaged roster must not hide the punches
            log.warning("roster unavailable for the punch list: %s", e)
            return {}

    def pin_punch(self, req, sess, form, files) -> Response:
        employee = (form.get("employee") or "").strip()
        if not employee or len(employee) > 64 or not all(c.isalnum() or c in "._-" for c in employee):
            raise HTTPException(400, "employee id: 1-64 letters, digits, '.', '_' or '-'")
        # The punch service decides who may punch (the roster, pin_allowed), as for every other way in.
        reason = (form.get("override_reason") or "").strip()[:500] or None
        outcome = self.daemon.punches.punch(employee, "pin", details={"operator": sess.user},
                                            override_reason=reason, operator=sess.user)
        if outcome.refused:
            self.audit(sess.user, "pin-punch-refused", {"employee": employee, "reason": outcome.message})
            return self.punches(req, sess, form, files, message=outcome.message)
        self.audit(sess.user, "pin-punch", {"employee": employee, "recorded": outcome.recorded,
                                            "seq": (outcome.record or {}).get("seq"),
                                            **({"override_reason": reason} if reason else {})})
        return self.punches(req, sess, form, files, message=outcome.message)


def _client(req: Request) -> str:
    return clients.client_address(req)


def _json_form(raw: bytes) -> dict:
    """A JSON body of the admin API as form fields ({} when empty or not an object). Hand-parsed, so a
    deeply nested body is a 400 like any other malformed one."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except RecursionError:
        raise HTTPException(400, "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from None
    return value if isinstance(value, dict) else {}


def _check_origin(req: Request) -> None:
    origin = req.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != (req.headers.get("Host") or ""):
        raise HTTPException(403, "cross-site request refused")
    if origin == "null":
        raise HTTPException(403, "cross-site request refused")


def _online(ind: dict) -> str:
    if not ind.get("central"):
        return "tidak dipakai"
    return {True: "terhubung", False: "tidak terhubung", None: "belum dicoba"}[ind.get("online")]


def _late(record: dict) -> int:
    """Minutes late as derived now (outside the hash), else as records before that table hashed it."""
    derived = record.get("derived") or {}
    if "minutes_late" in derived:
        return derived["minutes_late"] or 0
    return (record.get("details") or {}).get("minutes_late") or 0


def _when(record: dict, cfg) -> str:
    """Corrected office-local time, or the terminal's own clock marked '(jam terminal)'."""
    utc = record.get("utc")
    if utc:
        when = dt.datetime.fromisoformat(utc.replace("Z", "+00:00")).astimezone(ZoneInfo(cfg.device.timezone))
        return when.strftime("%Y-%m-%d %H.%M.%S") + ("" if "review" not in (record.get("flags") or []) else " (?)")
    ns = record.get("realtime_ns")
    return _local(ns, cfg) + " (jam terminal)" if ns else "-"


def _contact(report: dict, cfg) -> str:
    ns = report["sync"].get("last_contact_ns")
    return _local(ns, cfg) + " (jam terminal)" if ns else report["last_contact"]


def _local(ns: int | None, cfg) -> str:
    if not ns:
        return "-"
    when = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).astimezone(ZoneInfo(cfg.device.timezone))
    return when.strftime("%Y-%m-%d %H.%M.%S")

