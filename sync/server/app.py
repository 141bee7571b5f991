"""The reference central server as a WSGI app (terminal/wsgi.py), served by waitress.

`make_app(db)` opens (or creates) the store: a SQLite path or a postgresql:// URL. Device endpoints need
`Authorization: Bearer <token>` of that device (401 otherwise, 403 for another device's token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
import secrets
import time
import zlib

from sync.wire import timesample
from terminal.timing import clock
from terminal.wsgi import HTTPError, Request, Response, Router

from . import ingest, openapi
from .storage import PUNCH_COLUMNS, Store, open_store

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SUSPICIOUS_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")
MAX_PHOTO = 8 * 1024 * 1024
MAX_JSON = 64 * 1024 * 1024  # decompressed; 10,000 punches take about 6 MiB


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def add_device(store: Store, device_id: str, public_key: str | None = None) -> dict:
    """Register a device (or issue it a new token) and return what the terminal's config needs."""
    token = new_token()
    store.add_device(device_id, token_hash(token), public_key)
    return {"device": device_id, "token": token, "server_key": store.server_public_key()}


UNSYNCED_ERROR_NS = 100_000_000  # the clock error the server claims when its kernel cannot say


def _utc_text(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def server_clock_error() -> tuple[int, bool]:
    """(error bound in ns, synchronised) of this server's own clock, from the kernel's NTP status."""
    reading = clock.read()
    if reading.kernel_synced and reading.maxerror_us is not None:
        return reading.maxerror_us * 1000, True
    return UNSYNCED_ERROR_NS, False


# Fields stored in text columns: they must be storable by both databases (PostgreSQL text holds no NUL).
# Anything else is ignored or stored as JSON text, where any content is fine.
STORED_TEXT = frozenset(PUNCH_COLUMNS) | {"signature", "public_key", "fault_key", "event", "part", "category",
                                          "message", "nonce", "device_id", "times", "records", "events",
                                          "checkpoints", "head"}


def _check_text(value, key: str | None = None) -> None:
    """No NUL and no lone surrogates in values of STORED_TEXT fields (at any depth of those fields)."""
    if key is not None and key not in STORED_TEXT:
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise HTTPError(400, f"{key} must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPError(400, f"{key} must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                _check_text(v, k)
    elif isinstance(value, list):
        for v in value:
            _check_text(v, key)


def _gunzip(raw: bytes) -> bytes:
    """Decompress with a bound, so a small gzip bomb cannot take the server's memory."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, MAX_JSON + 1)
    except zlib.error:
        raise HTTPError(400, "body is not valid gzip") from None
    if len(out) > MAX_JSON or inflater.unconsumed_tail:
        raise HTTPError(413, f"the decompressed body exceeds {MAX_JSON // 2**20} MiB; send smaller batches")
    if not inflater.eof:
        raise HTTPError(400, "body is not valid gzip (truncated)")
    return out


class CentralServer:
    def __init__(self, store: Store):
        self.store = store
        self.router = Router()
        dev = "/api/v1/devices/{device_id}"
        for method, path, fn in (
            ("GET", "/", self.page),
            ("GET", "/api/v1/openapi.json", self.openapi),
            ("POST", f"{dev}/punches", self.punches),
            ("POST", f"{dev}/heartbeat", self.heartbeat),
            ("POST", f"{dev}/faults", self.faults),
            ("POST", f"{dev}/punch-times", self.punch_times),
            ("PUT", dev + "/photos/{sha256}", self.photo),
            ("GET", f"{dev}/roster", self.roster),
            ("POST", "/api/v1/time", self.time),
        ):
            self.router.add(method, path, fn)

    def __call__(self, environ, start_response):
        return self.router(environ, start_response)

    # -- helpers ------------------------------------------------------------------------------------

    def _token_device(self, req: Request) -> str:
        auth = req.header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        device = self.store.device_for_token(token_hash(token.strip())) if scheme.lower() == "bearer" else None
        if not device:
            raise HTTPError(401, "missing or wrong device token: send 'Authorization: Bearer <token>' with the "
                                 "token from `presensi server add-device`", {"WWW-Authenticate": "Bearer"})
        return device

    def _device(self, req: Request) -> str:
        device = self._token_device(req)
        if device != req.params["device_id"]:
            raise HTTPError(403, f"this token belongs to device {device!r}, not {req.params['device_id']!r}")
        return device

    @staticmethod
    def _json_body(req: Request):
        raw = req.body()
        if (req.header("Content-Encoding") or "").lower() == "gzip":
            raw = _gunzip(raw)
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"body is not valid JSON: {e}") from None
        if SUSPICIOUS_ESCAPE.search(raw):  # JSON carries NUL and surrogates only as escapes: walk only then
            try:
                _check_text(body)
            except RecursionError:
                raise HTTPError(400, "body is nested too deeply") from None
        return body

    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except ingest.BadBatch as e:
            raise HTTPError(400, str(e)) from None

    # -- API ----------------------------------------------------------------------------------------

    def openapi(self, req: Request) -> Response:
        return Response.json(openapi.document())

    def punches(self, req: Request) -> Response:
        device = self._device(req)
        body = self._json_body(req)
        log_id, after, records, checkpoints = self._call(ingest.validate_batch, body)
        return Response.json(self._call(ingest.store_batch, self.store, device, log_id, after, records,
                                        checkpoints))

    def heartbeat(self, req: Request) -> Response:
        device = self._device(req)
        return Response.json(self._call(ingest.heartbeat, self.store, device, self._json_body(req)))

    def faults(self, req: Request) -> Response:
        device = self._device(req)
        body = self._json_body(req)
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or len(events) > ingest.MAX_ITEMS or not all(
                isinstance(e, dict) and isinstance(e.get("id"), int) and not isinstance(e.get("id"), bool)
                and 1 <= e["id"] <= 2**62 for e in events):
            raise HTTPError(400, "body must be {\"events\": [{\"id\": positive integer, ...}]}")
        for e in events:
            for k in ("fault_key", "event", "part", "category", "message", "photo_sha256"):
                if e.get(k) is not None and not isinstance(e[k], str):
                    raise HTTPError(400, f"events[].{k} must be a string or null")
            rt = e.get("realtime_ns")
            if rt is not None and (not isinstance(rt, int) or isinstance(rt, bool) or abs(rt) >= 2**63):
                raise HTTPError(400, "events[].realtime_ns must be a 64-bit integer or null")
        return Response.json({"acked_through": self.store.store_faults(device, events)})

    def punch_times(self, req: Request) -> Response:
        device = self._device(req)
        return Response.json(self._call(ingest.update_times, self.store, device, self._json_body(req)))

    def photo(self, req: Request) -> Response:
        device = self._device(req)
        sha = req.params["sha256"]
        if not SHA256.match(sha):
            raise HTTPError(400, "the photo address must be its SHA-256 as 64 lowercase hex digits")
        req.max_body = MAX_PHOTO
        data = req.body()
        if hashlib.sha256(data).hexdigest() != sha:
            raise HTTPError(400, "the photo's SHA-256 does not match its address (damaged upload; retry)")
        created = self.store.put_photo(device, sha, data)
        return Response.json({"sha256": sha, "stored": created}, 201 if created else 200)

    def roster(self, req: Request) -> Response:
        self._device(req)
        since = req.int_query("since", 0, 0, 2**62)
        latest = self.store.latest_roster()
        if latest is None:
            return Response(b"", 204)
        if latest["version"] <= since:
            return Response(b"", 304)
        return Response(latest["bundle"], 200, {"Content-Type": "application/octet-stream",
                                                "X-Roster-Version": str(latest["version"])})

    def time(self, req: Request) -> Response:
        t2_ns = time.time_ns()
        device = self._token_device(req)
        body = self._json_body(req)
        if isinstance(body, dict) and isinstance(body.get("device_id"), str) and body["device_id"] != device:
            raise HTTPError(403, f"this token belongs to device {device!r}, not {body['device_id']!r}")
        try:
            error_bound_ns, synced = server_clock_error()
            return Response.json(timesample.answer_time_request(self.store.server_key(), body, t2_ns,
                                                                error_bound_ns=error_bound_ns, synced=synced))
        except ValueError as e:
            raise HTTPError(400, f"malformed time request: {e}") from None

    # -- the read-only page ---------------------------------------------------------------------------

    def page(self, req: Request) -> Response:
        e = html.escape
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>presensi central</title>"
                 "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
                 ".bad{color:#b00}</style></head><body><h1>presensi-edge reference central server</h1>",
                 "<h2>Devices</h2><table><tr><th>device</th><th>last contact</th><th>punches</th>"
                 "<th>acked through</th><th>backlog (heartbeat)</th><th>alarms</th></tr>"]
        for d in self.store.devices():
            hb = d["heartbeat"] or {}
            last = _utc_text(d["last_contact_ns"]) if d["last_contact_ns"] else "never"
            acked = ", ".join(f"{x['log_id'][:8]}: {x['acked_through']}" for x in d["logs"]) or "-"
            cls = " class='bad'" if d["alarms"] else ""
            parts.append(f"<tr><td>{e(d['device_id'])}</td><td>{e(last)}</td><td>{d['punches']}</td>"
                         f"<td>{e(acked)}</td><td>{e(str(hb.get('backlog', '-')))}</td>"
                         f"<td{cls}>{d['alarms']}</td></tr>")
        parts.append("</table><h2>Alarms</h2><table><tr><th>when</th><th>device</th><th>kind</th>"
                     "<th>message</th></tr>")
        for a in self.store.alarms(limit=50):
            parts.append(f"<tr class='bad'><td>{e(_utc_text(a['created_ns']))}</td>"
                         f"<td>{e(a['device_id'])}</td><td>{e(a['kind'])}</td><td>{e(a['message'])}</td></tr>")
        parts.append("</table><h2>Recent punches</h2><table><tr><th>device</th><th>seq</th><th>employee</th>"
                     "<th>method</th><th>kind</th><th>utc</th><th>basis</th><th>problems</th></tr>")
        for p in self.store.recent_punches(50):
            parts.append(f"<tr><td>{e(p['device_id'])}</td><td>{p['seq']}</td><td>{e(p['employee'] or '')}</td>"
                         f"<td>{e(p['method'] or '')}</td><td>{e(p['kind'] or '')}</td><td>{e(p['utc'] or '-')}"
                         f"</td><td>{e(p['basis'] or '-')}</td><td>{e(p['problems'] or '')}</td></tr>")
        parts.append("</table></body></html>")
        return Response.text("".join(parts), content_type="text/html; charset=utf-8")


def make_app(db) -> CentralServer:
    """The WSGI app over the store at `db` (SQLite path or postgresql:// URL), created if needed."""
    return CentralServer(open_store(db))


def serve(app: CentralServer, host: str, port: int, on_ready=None, threads: int = 4) -> None:
    """Serve with waitress until interrupted; on_ready(url) is called once the socket listens."""
    from waitress.server import create_server

    server = create_server(app, host=host, port=port, threads=threads, channel_timeout=30,
                           max_request_body_size=64 * 1024 * 1024, clear_untrusted_proxy_headers=True)
    if on_ready:
        on_ready(f"http://{host}:{server.effective_port}")
    try:
        server.run()
    finally:
        server.close()
