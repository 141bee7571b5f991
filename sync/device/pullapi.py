"""The terminal's pull API, for central servers that fetch punches instead of receiving pushes.

    GET /api/v1/punches?after_seq=N&limit=M   records (with derived time fields), cursor, latest checkpoint
    GET /api/v1/health                        health at a glance
    GET /api/v1/faults?after_id=N&limit=M     fault events (contract C5 table; empty where absent)
    GET /api/v1/openapi.json                  the OpenAPI document, generated from the routes (public)

Every data operation needs `Authorization: Bearer <[web] token>` (401 otherwise); requests are rate
limited per client address with a token bucket of `[web] rate_limit` per second (429 + Retry-After);
malformed queries get 400. All errors have a JSON body {"error": ...}. The API is a FastAPI router
(plumbing in sync/asgi.py); the daemon puts it on its web server on `[web] listen` (`include`), or it
runs alone (`serve_pull_api`). Client certificates: run a TLS proxy that requires one in front of a
127.0.0.1 listener (see the OpenAPI description).
"""


import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sync import asgi
from terminal import __version__
from terminal.errors import LogError
from terminal.log import punchlog
from terminal.punch.workcodes import code_of
from terminal.timing import timeline

log = logging.getLogger("presensi.pullapi")
PREFIX = "/api/v1/"
OPENAPI_PATH = "/api/v1/openapi.json"
MAX_SEQ = 2**62
MAX_LIMIT = 5000
FAULT_FIELDS = ("id", "fault_key", "event", "part", "category", "message", "diagnostics", "photo_path",
                "photo_sha256", "realtime_ns")  # contract C5
DIGITS = re.compile(r"^-?[0-9]{1,19}$")
MAX_CLIENTS = 4096  # rate-limit buckets kept; the least recently seen are forgotten first
DESCRIPTION = ("For central servers that pull punches from the terminal. Every operation needs "
               "`Authorization: Bearer <[web] token>`. Records are the hash-chained punch log "
               "(verify with the device's public key from the checkpoint). For a client "
               "certificate, put a TLS proxy that requires one (nginx `ssl_verify_client on`, "
               "stunnel `verify=2`) in front of [web] listen bound to 127.0.0.1.")


class PullAPIError(Exception):
    """The pull API cannot be served (address in use, bad [web] listen); the message says what to do."""


class RateLimiter:
    """Token bucket per client: `rate` requests per second, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when allowed, else the seconds to wait before the next request will be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait



# -- answer models (documentation: the OpenAPI document is generated from them) -------------------------

class Record(BaseModel):
    log_id: str
    seq: int
    hash: str
    prev_hash: str
    employee: str
    method: str
    kind: str | None
    details: dict[str, Any]
    boot_id: str
    monoraw_ns: int
    boottime_ns: int
    realtime_ns: int
    timex_status: int | None = None
    maxerror_us: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    photo_path: str | None = None
    photo_sha256: str | None = None
    utc: str | None = None
    earliest: str | None = None
    latest: str | None = None
    basis: str | None = None
    flags: list[str] | None = None
    work_code: int | None = Field(None, description=(
        "the employee's work code (ZK's number, e.g. 1 Dinas Luar), as the hashed details.work_code carries it; "
        "null = none"))
    derived: dict[str, Any] | None = Field(None, description=(
        "kind, minutes_late, minutes_early, local_date, local_time, timezone, workday, day_name, zk_state, "
        "basis, computed_from, time_verified, revision: derived from the corrected time, outside the hash; "
        "recomputed (higher revision) when the punch's time is re-anchored. For records made before derived "
        "kinds, `kind` in the record is the hashed value and derived.basis is 'recorded'"))


class Checkpoint(BaseModel):
    log_id: str
    seq: int
    hash: str
    signed_realtime_ns: int
    public_key: str
    signature: str


class Cursor(BaseModel):
    after_seq: int


class Head(BaseModel):
    seq: int
    hash: str | None


class PunchPage(BaseModel):
    device: str
    log_id: str
    records: list[Record]
    cursor: Cursor
    next_after_seq: int
    more: bool
    head: Head
    checkpoint: Checkpoint | None


class Health(BaseModel):
    ok: bool
    device: str
    version: str
    log_id: str
    head: Head
    checkpoint: Checkpoint | None
    time: dict[str, Any] | None = None
    status: dict[str, Any] = {}


class FaultEvent(BaseModel):
    id: int
    fault_key: str | None
    event: str
    part: str | None
    category: str | None
    message: str | None
    diagnostics: Any = None
    photo_path: str | None = None
    photo_sha256: str | None = None
    realtime_ns: int | None


class FaultPage(BaseModel):
    events: list[FaultEvent]
    next_after_id: int
    more: bool
    supported: bool


def _digits(value):
    """Plain decimal digits only (pydantic, like int(), would also take ' 1', '1_0' and '+1')."""
    if isinstance(value, str) and not DIGITS.match(value):
        raise ValueError("not a whole number")
    return value


def _int_query(default: int, lo: int, hi: int, description: str):
    return Annotated[int, Query(ge=lo, le=hi, description=description), BeforeValidator(_digits)]


ERRORS = {**asgi.errors(400, 401, 429, 503)}


class PullAPI:
    """The pull API's routes and state. One PunchLog connection per server thread (SQLite connections are
    not shared)."""

    def __init__(self, cfg, *, token: str | None = None, rate_limit: float | None = None,
                 max_limit: int = MAX_LIMIT, status: Callable[[], dict] | None = None):
        self.cfg = cfg
        # `presensi status` of this terminal for /api/v1/health, wired by terminal/app/web.py (this side of
        # sync/ never imports the wiring); without it the health answer carries the log and clock only.
        self.status = status
        self.token = token if token is not None else cfg.web.token
        if not self.token:
            raise ValueError("the pull API needs [web] token; set it to a long random string")
        self.limiter = RateLimiter(rate_limit if rate_limit is not None else cfg.web.rate_limit)
        self.max_limit = max_limit
        self._local = threading.local()
        self.router = self._routes()
        self._doc: dict | None = None

    def _routes(self) -> APIRouter:
        r = APIRouter()
        page = min(500, self.max_limit)
        AfterSeq = _int_query(0, 0, MAX_SEQ, "cursor: return punches after this seq")
        AfterId = _int_query(0, 0, MAX_SEQ, "cursor: return events after this id")
        Limit = _int_query(page, 1, self.max_limit, "most items in this page")

        @r.get("/api/v1/punches", operation_id="listPunches", summary="punches with seq > after_seq, oldest first",
               response_model=None, responses={200: {"model": PunchPage, "description": "a page of records, the "
                                                     "next cursor and the latest signed checkpoint"}, **ERRORS})
        def punches(after_seq: AfterSeq = 0, limit: Limit = page) -> JSONResponse:
            return JSONResponse(self.punches(after_seq, limit))

        @r.get("/api/v1/health", operation_id="health", summary="the terminal's health at a glance",
               response_model=None, responses={200: {"model": Health, "description": "health report"}, **ERRORS})
        def health() -> JSONResponse:
            return JSONResponse(self.health())

        @r.get("/api/v1/faults", operation_id="listFaults", summary="fault events with id > after_id, oldest first",
               response_model=None, responses={200: {"model": FaultPage, "description": "a page of fault events"},
                                               **ERRORS})
        def faults(after_id: AfterId = 0, limit: Limit = page) -> JSONResponse:
            return JSONResponse(self.faults(after_id, limit))

        return r

    def document(self) -> dict:
        """The generated OpenAPI document of these routes alone (also when served beside the kiosk)."""
        if self._doc is None:
            doc_app = asgi.make_app(title="presensi-edge terminal pull API", version="1", description=DESCRIPTION,
                                    openapi_url=None)
            doc_app.include_router(self.router)
            self._doc = asgi.openapi(doc_app, doc_app.routes)
            self._doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer"}
            self._doc["security"] = [{"bearer": []}]
        return self._doc

    # -- the gate: rate limit, then the token, for everything under /api/v1/ -----------------------------

    def refusal(self, client: str, authorization: str | None, path: str) -> JSONResponse | None:
        wait = self.limiter.take(client or "unknown")
        if wait:
            return asgi.error_response(429, f"too many requests; at most {self.limiter.rate:g} per second, "
                                            "retry later", {"Retry-After": str(max(1, round(wait + 0.5)))})
        if path == OPENAPI_PATH:
            return None
        header = authorization or ""
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.token.encode())
        if not ok:
            why = "missing bearer token" if not header else "wrong bearer token"
            return asgi.error_response(401, f"{why}: send 'Authorization: Bearer <token>' with the terminal's "
                                            "[web] token", {"WWW-Authenticate": 'Bearer realm="presensi"'})
        return None

    def _status(self) -> dict:
        report = self.status() if self.status is not None else {}
        return {k: v for k, v in report.items() if isinstance(v, dict)}

    def _log(self) -> punchlog.PunchLog:
        plog = getattr(self._local, "log", None)
        if plog is None:
            try:
                plog = punchlog.PunchLog(self.cfg.state_dir, checkpoint_every=self.cfg.log.checkpoint_every)
            except LogError as e:
                raise HTTPException(503, f"punch log unavailable: {e}") from None
            self._local.log = plog
        return plog

    # -- operations ------------------------------------------------------------------------------------

    def punches(self, after_seq: int, limit: int) -> dict:
        plog = self._log()
        try:
            records = list(plog.records(after_seq=after_seq, limit=limit, batch=limit))
            head_seq, head_hash = plog.head()
            checkpoint = plog.latest_checkpoint()
        except LogError as e:
            raise HTTPException(503, f"punch log unavailable: {e}") from None
        records = [{**r, "work_code": code_of(r)} for r in _annotate(plog.conn, records)]
        next_after = records[-1]["seq"] if records else max(after_seq, 0)
        return {
            "device": self.cfg.device.id, "log_id": plog.log_id, "records": records,
            "cursor": {"after_seq": next_after}, "next_after_seq": next_after,
            "more": next_after < head_seq, "head": {"seq": head_seq, "hash": head_hash}, "checkpoint": checkpoint,
        }

    def health(self) -> dict:
        plog = self._log()
        head_seq, head_hash = plog.head()
        body = {"ok": True, "device": self.cfg.device.id, "version": __version__, "log_id": plog.log_id,
                "head": {"seq": head_seq, "hash": head_hash}, "checkpoint": plog.latest_checkpoint(),
                "time": _now(plog.conn), "status": self._status()}
        body["ok"] = all(p.get("ok", True) for p in body["status"].values() if isinstance(p, dict))
        return body

    def faults(self, after_id: int, limit: int) -> dict:
        conn = self._log().conn
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='fault_events'").fetchone():
            return {"events": [], "next_after_id": after_id, "more": False, "supported": False}
        rows = conn.execute(f"SELECT {', '.join(FAULT_FIELDS)} FROM fault_events WHERE id > ? ORDER BY id LIMIT ?",
                            (after_id, limit + 1)).fetchall()
        events = [_fault(dict(r)) for r in rows[:limit]]
        return {"events": events, "next_after_id": events[-1]["id"] if events else after_id,
                "more": len(rows) > limit, "supported": True}


class Gate:
    """ASGI middleware in front of the routes: every request under /api/v1/ is rate limited and, except
    the OpenAPI document, needs the bearer token, before routing (so unknown paths are 401 too)."""

    def __init__(self, app: ASGIApp, api: PullAPI):
        self.app, self.api = app, api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(PREFIX):
            headers = dict(scope.get("headers") or ())
            auth = headers.get(b"authorization")
            client = (scope.get("client") or ("", 0))[0]
            refused = self.api.refusal(client, auth.decode("latin-1") if auth is not None else None, scope["path"])
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _fault(row: dict) -> dict:
    try:
        row["diagnostics"] = json.loads(row.get("diagnostics") or "{}")
    except ValueError:
        pass  # kept as the stored text: the reader still sees what was recorded
    return row


def _annotate(conn, records: list[dict]) -> list[dict]:
    if not records:
        return records
    try:
        return timeline.annotate(conn, records)
    except Exception:  # derived times must never block delivery of the raw, signed records
        log.exception("timeline.annotate failed; sending records without derived times")
        return [{**r, "utc": None, "earliest": None, "latest": None, "basis": "unavailable",
                 "flags": ["time-unavailable"]} for r in records]


def _now(conn) -> dict | None:
    try:
        return timeline.now(conn)
    except Exception:
        log.exception("timeline.now failed")
        return None


# -- serving ---------------------------------------------------------------------------------------------

def include(app: FastAPI, api: PullAPI | None) -> FastAPI:
    """Put the pull API on `app` (the daemon's web server): its routes (kept out of that app's own
    OpenAPI document), its document at /api/v1/openapi.json and its gate. With api None, nothing."""
    if api is None:
        return app
    app.include_router(api.router, include_in_schema=False)
    app.add_api_route(OPENAPI_PATH, lambda: JSONResponse(api.document()), methods=["GET"], include_in_schema=False)
    app.add_middleware(Gate, api=api)
    return app


def build_app(api: PullAPI) -> FastAPI:
    """The pull API alone (`serve_pull_api`, the benchmark)."""
    app = asgi.make_app(title="presensi-edge terminal pull API", version="1", description=DESCRIPTION,
                        openapi_url=None)
    return include(app, api)


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"[web] listen = {listen!r} must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def serve_pull_api(cfg, stop_event: threading.Event, *, app=None, listen: str | None = None,
                   on_ready: Callable[[int], None] | None = None,
                   status: Callable[[], dict] | None = None) -> None:
    """Serve until stop_event is set (the daemon calls this in a thread). `on_ready(port)` is called once
    listening. Returns at once, logging why, when [web] token is unset (the pull API is off). Raises
    PullAPIError when the address cannot be used."""
    if app is None and not cfg.web.token:
        log.info("pull API off: [web] token is not set")
        return
    address = listen or cfg.web.listen
    try:
        host, port = parse_listen(address)
        app = app if app is not None else build_app(PullAPI(cfg, status=status))
        served = asgi.Served(app, host, port, name="pullapi-http")
    except (OSError, ValueError) as e:
        raise PullAPIError(f"[web] listen = {address!r}: cannot listen there ({getattr(e, 'strerror', None) or e}); "
                           "is another program using the port, or is the address not on this machine?") from None
    log.info("pull API listening on http://%s:%s/api/v1/", host, served.port)
    if on_ready is not None:
        on_ready(served.port)
    try:
        stop_event.wait()
    finally:
        served.stop()
