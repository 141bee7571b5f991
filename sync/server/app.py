"""The reference central server: a FastAPI app (plumbing in sync/asgi.py) served by uvicorn.

`make_app(db)` opens (or creates) the store: a SQLite path or a postgresql:// URL. Device endpoints need
`Authorization: Bearer <token>` of that device (401 otherwise, 403 for another device's token). The
OpenAPI document is generated from the routes and models below and served at /api/v1/openapi.json.
"""


import datetime as dt
import hashlib
import html
import re
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from sync import asgi
from sync.wire import timesample
from terminal import __version__
from terminal.timing import clock

from . import ingest
from .storage import PUNCH_COLUMNS, Store, open_store

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SUSPICIOUS_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")
MAX_PHOTO = 8 * 1024 * 1024
MAX_JSON = asgi.MAX_INFLATED  # decompressed; 10,000 punches take about 6 MiB
# Bodies as sent (gzip or not): a batch of 10,000 punches (64 MiB, as before); the small ones much less.
PUNCHES_LIMIT = 64 * 1024 * 1024
TIMES_LIMIT = 16 * 1024 * 1024
FAULTS_LIMIT = 16 * 1024 * 1024
SMALL_LIMIT = 256 * 1024  # heartbeat, time request
DEV = "/api/v1/devices/{device_id}"


UNSYNCED_ERROR_NS = 100_000_000  # the clock error the server claims when its kernel cannot say


def server_clock_error() -> tuple[int, bool]:
    """(error bound in ns, synchronised) of this server's own clock, from the kernel's NTP status."""
    reading = clock.read()
    if reading.kernel_synced and reading.maxerror_us is not None:
        return reading.maxerror_us * 1000, True
    return UNSYNCED_ERROR_NS, False


def _utc_text(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def add_device(store: Store, device_id: str, public_key: str | None = None) -> dict:
    """Register a device (or issue it a new token) and return what the terminal's config needs."""
    token = new_token()
    store.add_device(device_id, token_hash(token), public_key)
    return {"device": device_id, "token": token, "server_key": store.server_public_key()}


# -- the request and answer models (the OpenAPI document is generated from them) -----------------------
# Text the databases store as-is: no NUL (PostgreSQL text cannot hold it). Free-form objects (details,
# diagnostics, health) are stored as JSON text and may hold anything. The models accept what ingest.py
# accepts (it checks again, with its own messages): they are the contract, not a second opinion.

Text = Annotated[str, StringConstraints(pattern=r"^[^\u0000]*$")]
Int64 = Annotated[int, Field(ge=-(2**63 - 1), le=2**63 - 1)]
Seq = Annotated[int, Field(ge=1, le=2**62)]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Degrees = Annotated[float, Field(ge=-180, le=180)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class DerivedValues(Strict):
    """Kind, lateness and local time the terminal derived from the punch's corrected time (outside the
    hash): recomputed when the time is re-anchored; a higher `revision` replaces a lower one."""
    kind: Annotated[Text, StringConstraints(max_length=32)]
    minutes_late: Annotated[int, Field(ge=0, le=100_000)] = 0
    minutes_early: Annotated[int, Field(ge=0, le=100_000)] = 0
    local_date: Annotated[Text, StringConstraints(max_length=10)] | None = None
    local_time: Annotated[Text, StringConstraints(max_length=12)] | None = None
    timezone: Annotated[Text, StringConstraints(max_length=64)] | None = None
    workday: bool | None = None
    day_name: Annotated[Text, StringConstraints(max_length=200)] = ""
    zk_state: Annotated[int, Field(ge=0, le=255)] | None = None
    basis: Annotated[Text, StringConstraints(max_length=32)]
    computed_from: Annotated[Text, StringConstraints(max_length=16)]
    time_verified: bool
    revision: Annotated[int, Field(ge=1, le=2**62)]


class PunchRecord(Strict):
    log_id: Text
    seq: Seq
    employee: Text
    method: Text
    kind: Text | None = None
    details: dict[str, Any] | str = Field(default_factory=dict)
    boot_id: Text
    monoraw_ns: Int64
    boottime_ns: Int64
    realtime_ns: Int64
    timex_status: Int64 | None = None
    maxerror_us: Int64 | None = None
    latitude: Degrees | None = None
    longitude: Degrees | None = None
    photo_sha256: Text | None = None
    prev_hash: Hex64
    hash: Hex64
    utc: Text | None = None
    earliest: Text | None = None
    latest: Text | None = None
    basis: Text | None = None
    flags: list[Text] | None = None
    derived: DerivedValues | None = None


class Checkpoint(Strict):
    log_id: Text
    seq: Seq
    hash: Text
    signature: Text
    public_key: Text = None  # type: ignore[assignment]  # optional, but never null
    signed_realtime_ns: Int64 = None  # type: ignore[assignment]


class Batch(Strict):
    log_id: Annotated[Text, StringConstraints(min_length=1)]
    after_seq: Annotated[int, Field(ge=0, le=2**62, description="the terminal holds every record it has "
                                                                  "after this seq in `records`")] = None  # type: ignore[assignment]
    records: Annotated[list[PunchRecord], Field(max_length=ingest.MAX_ITEMS)]
    checkpoints: list[Checkpoint] = Field(default_factory=list)


class Ack(BaseModel):
    acked_through: int
    stored: int | None = None
    duplicates: int | None = None
    flagged: int | None = None


class Head(Strict):
    seq: Annotated[int, Field(ge=0, le=2**62)] = 0
    hash: Text | None = None


class Heartbeat(Strict):
    version: str = None  # type: ignore[assignment]
    log_id: Text = None  # type: ignore[assignment]
    head: Head = Field(default_factory=Head)
    backlog: int = None  # type: ignore[assignment]
    acked_seq: int = None  # type: ignore[assignment]
    health: dict[str, Any] = None  # type: ignore[assignment]


class HeartbeatAck(BaseModel):
    ok: bool
    acked_through: int
    server_time_ns: int | None = None


class FaultEvent(Strict):
    id: Seq
    fault_key: Text | None = None
    event: Text | None = None
    part: Text | None = None
    category: Text | None = None
    message: Text | None = None
    diagnostics: Any = None
    photo_sha256: Text | None = None
    realtime_ns: Int64 | None = None


class Faults(Strict):
    events: Annotated[list[FaultEvent], Field(max_length=ingest.MAX_ITEMS)]


class FaultsAck(BaseModel):
    acked_through: int


class DerivedTime(Strict):
    seq: Seq
    utc: Text | None = None
    earliest: Text | None = None
    latest: Text | None = None
    basis: Text | None = None
    flags: list[Text] | None = None
    derived: DerivedValues | None = None


class Times(Strict):
    log_id: Text
    times: Annotated[list[DerivedTime], Field(max_length=ingest.MAX_ITEMS)]


class TimesAck(BaseModel):
    updated: int


class ChainHead(Strict):
    model_config = ConfigDict(strict=True, extra="forbid")
    seq: Annotated[int, Field(ge=0, le=2**62)]
    hash: Hex64


class TimeRequest(Strict):
    # base64 with its padding: every string this pattern admits decodes to 16 to 63 bytes (the server
    # takes up to 64)
    nonce: Annotated[str, StringConstraints(
        pattern=r"^([A-Za-z0-9+/]{4}){5,20}([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)$"),
        Field(description="base64 of 16 to 64 random bytes")]
    device_id: Annotated[Text, StringConstraints(min_length=1, max_length=128),
                         Field(description="must be the device the token belongs to (else 403)")]
    chain_head: ChainHead | None = None


class Photo(BaseModel):
    sha256: str
    stored: bool


def _digits(value):
    """Query numbers in plain decimal digits only (int() would also take ' 1' and '1_0')."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,19}", value):
        raise ValueError("not a whole number")
    return value


Since = Annotated[int, Query(ge=0, le=2**62), BeforeValidator(_digits)]
DeviceId = Annotated[str, Path(pattern=r"^[^\u0000]*$")]


# -- request checks ------------------------------------------------------------------------------------

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
            raise HTTPException(400, f"{key} must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPException(400, f"{key} must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                _check_text(v, k)
    elif isinstance(value, list):
        for v in value:
            _check_text(v, key)


class JsonBody:
    """Dependency: the request's JSON body (gzip allowed), checked against `model` and for text the
    databases cannot store. Declared after the device dependency, so a wrong token is 401 before any
    body is read or inflated."""

    def __init__(self, model: type[BaseModel]):
        self.model = model

    async def __call__(self, request: Request) -> Any:
        raw = await request.body()
        if (request.headers.get("content-encoding") or "").lower() == "gzip":
            raw = asgi.gunzip(raw, MAX_JSON)
        body = asgi.parse_json(raw) if raw else None
        if SUSPICIOUS_ESCAPE.search(raw):  # JSON carries NUL and surrogates only as escapes: walk only then
            try:
                _check_text(body)
            except RecursionError:
                raise HTTPException(400, "body is nested too deeply") from None
        try:
            self.model.model_validate(body)
        except asgi.ValidationError as e:
            raise HTTPException(400, asgi.one_sentence(e)) from None
        except RecursionError:
            raise HTTPException(400, "body is nested too deeply") from None
        return body


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _call(fn, *args):
    try:
        return fn(*args)
    except ingest.BadBatch as e:
        raise HTTPException(400, str(e)) from None


# -- the app --------------------------------------------------------------------------------------------

def build_app(store: Store | None) -> FastAPI:
    """The app over `store` (None: only to generate the OpenAPI document)."""
    app = asgi.make_app(
        title="presensi-edge reference central server", version=__version__, openapi_url="/api/v1/openapi.json",
        description="Sync API for attendance terminals: push of hash-chained punches, heartbeat, fault "
                    "reports, photos, corrected times, signed roster bundles and time.")
    app.store = store  # type: ignore[attr-defined]  # tests and the CLI reach the store through the app
    app.include_router(router(store))
    app.add_api_route("/", lambda: HTMLResponse(page(store)), methods=["GET"], include_in_schema=False)
    return app


def router(store: Store | None) -> APIRouter:
    r = APIRouter()
    bearer = HTTPBearer(auto_error=False, description="the device token from `presensi server add-device`")

    def token_device(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        device = store.device_for_token(token_hash(creds.credentials.strip())) if creds else None
        if not device:
            raise HTTPException(401, "missing or wrong device token: send 'Authorization: Bearer <token>' with the "
                                     "token from `presensi server add-device`", {"WWW-Authenticate": "Bearer"})
        return device

    def device(device_id: DeviceId, token_dev: Annotated[str, Depends(token_device)]) -> str:
        if token_dev != device_id:
            raise HTTPException(403, f"this token belongs to device {token_dev!r}, not {device_id!r}")
        return token_dev

    Device = Annotated[str, Depends(device)]
    errs = asgi.errors(400, 401, 403, 413)

    @r.post(f"{DEV}/punches", summary="Deliver a batch of punches (idempotent; dedupe on device, log_id, seq)",
            response_model=None, responses={200: {"model": Ack, "description": "stored; acked_through = highest "
                                                  "contiguous seq"}, **errs},
            openapi_extra=asgi.json_request(Batch, PUNCHES_LIMIT))
    def punches(dev: Device, body: Annotated[Any, Depends(JsonBody(Batch))]) -> dict:
        log_id, after, records, checkpoints = _call(ingest.validate_batch, body)
        return _call(ingest.store_batch, store, dev, log_id, after, records, checkpoints)

    @r.post(f"{DEV}/heartbeat", summary="Small liveness report sent even while bulk upload fails",
            response_model=None, responses={200: {"model": HeartbeatAck, "description": "recorded"}, **errs},
            openapi_extra=asgi.json_request(Heartbeat, SMALL_LIMIT))
    def heartbeat(dev: Device, body: Annotated[Any, Depends(JsonBody(Heartbeat))]) -> dict:
        return _call(ingest.heartbeat, store, dev, body)

    @r.post(f"{DEV}/faults", summary="Fault events (raised, cleared, report) from the terminal's fault_events "
                                     "table", response_model=None,
            responses={200: {"model": FaultsAck, "description": "stored"}, **errs},
            openapi_extra=asgi.json_request(Faults, FAULTS_LIMIT))
    def faults(dev: Device, body: Annotated[Any, Depends(JsonBody(Faults))]) -> dict:
        return {"acked_through": store.store_faults(dev, _fault_events(body))}

    @r.post(f"{DEV}/punch-times", summary="Re-anchored (derived) times of stored punches; raw fields are never "
                                          "changed", response_model=None,
            responses={200: {"model": TimesAck, "description": "updated"}, **errs},
            openapi_extra=asgi.json_request(Times, TIMES_LIMIT))
    def punch_times(dev: Device, body: Annotated[Any, Depends(JsonBody(Times))]) -> dict:
        return _call(ingest.update_times, store, dev, body)

    @r.put(DEV + "/photos/{sha256}", summary="Upload a punch photo (JPEG) addressed by its SHA-256",
           response_model=None,
           responses={200: {"model": Photo, "description": "already stored"},
                      201: {"model": Photo, "description": "stored"}, **errs},
           openapi_extra=asgi.limit(MAX_PHOTO, requestBody={"required": True, "content": {"image/jpeg": {
               "schema": {"type": "string", "format": "binary"}}}}))
    def photo(dev: Device, sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
              data: Annotated[bytes, Depends(_raw_body)]) -> JSONResponse:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise HTTPException(400, "the photo's SHA-256 does not match its address (damaged upload; retry)")
        created = store.put_photo(dev, sha256, data)
        return JSONResponse({"sha256": sha256, "stored": created}, 201 if created else 200)

    @r.get(f"{DEV}/roster", summary="The latest signed roster bundle newer than `since`", response_model=None,
           response_class=Response,
           responses={200: {"description": "a signed bundle (sync/wire/rosterbundle.py format)", "content": {
               "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
               204: {"description": "no roster published yet"},
               304: {"description": "the terminal already has the latest version"}, **asgi.errors(400, 401, 403)})
    def roster(dev: Device, since: Since = 0) -> Response:
        latest = store.latest_roster()
        if latest is None:
            return Response(b"", 204)
        if latest["version"] <= since:
            return Response(b"", 304)
        return Response(latest["bundle"], 200, {"Content-Type": "application/octet-stream",
                                                "X-Roster-Version": str(latest["version"])})

    @r.post("/api/v1/time", summary="Signed time answer (see sync/wire/timesample.py)", response_model=None,
            responses={200: {"description": "signed answer", "content": {"application/json": {
                "schema": {"type": "object"}}}}, **asgi.errors(400, 401, 403, 413, 503)},
            openapi_extra=asgi.json_request(TimeRequest, SMALL_LIMIT))
    def time_answer(dev: Annotated[str, Depends(token_device)],
                    body: Annotated[Any, Depends(JsonBody(TimeRequest))]) -> dict:
        t2_ns = time.time_ns()
        if isinstance(body, dict) and isinstance(body.get("device_id"), str) and body["device_id"] != dev:
            raise HTTPException(403, f"this token belongs to device {dev!r}, not {body['device_id']!r}")
        try:
            error_bound_ns, synced = server_clock_error()
            return timesample.answer_time_request(store.server_key(), body, t2_ns, error_bound_ns=error_bound_ns,
                                                  synced=synced)
        except ValueError as e:
            raise HTTPException(400, f"malformed time request: {e}") from None

    return r


def _fault_events(body) -> list[dict]:
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or len(events) > ingest.MAX_ITEMS or not all(
            isinstance(e, dict) and isinstance(e.get("id"), int) and not isinstance(e.get("id"), bool)
            and 1 <= e["id"] <= 2**62 for e in events):
        raise HTTPException(400, "body must be {\"events\": [{\"id\": positive integer, ...}]}")
    for e in events:
        for k in ("fault_key", "event", "part", "category", "message", "photo_sha256"):
            if e.get(k) is not None and not isinstance(e[k], str):
                raise HTTPException(400, f"events[].{k} must be a string or null")
        rt = e.get("realtime_ns")
        if rt is not None and (not isinstance(rt, int) or isinstance(rt, bool) or abs(rt) >= 2**63):
            raise HTTPException(400, "events[].realtime_ns must be a 64-bit integer or null")
    return events


# -- the read-only page -----------------------------------------------------------------------------------

def page(store: Store) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>presensi central</title>"
             "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
             ".bad{color:#b00}</style></head><body><h1>presensi-edge reference central server</h1>",
             "<h2>Devices</h2><table><tr><th>device</th><th>last contact</th><th>punches</th>"
             "<th>acked through</th><th>backlog (heartbeat)</th><th>alarms</th></tr>"]
    for d in store.devices():
        hb = d["heartbeat"] or {}
        last = _utc_text(d["last_contact_ns"]) if d["last_contact_ns"] else "never"
        acked = ", ".join(f"{x['log_id'][:8]}: {x['acked_through']}" for x in d["logs"]) or "-"
        cls = " class='bad'" if d["alarms"] else ""
        parts.append(f"<tr><td>{e(d['device_id'])}</td><td>{e(last)}</td><td>{d['punches']}</td>"
                     f"<td>{e(acked)}</td><td>{e(str(hb.get('backlog', '-')))}</td>"
                     f"<td{cls}>{d['alarms']}</td></tr>")
    parts.append("</table><h2>Alarms</h2><table><tr><th>when</th><th>device</th><th>kind</th>"
                 "<th>message</th></tr>")
    for a in store.alarms(limit=50):
        parts.append(f"<tr class='bad'><td>{e(_utc_text(a['created_ns']))}</td>"
                     f"<td>{e(a['device_id'])}</td><td>{e(a['kind'])}</td><td>{e(a['message'])}</td></tr>")
    parts.append("</table><h2>Recent punches</h2><table><tr><th>device</th><th>seq</th><th>employee</th>"
                 "<th>method</th><th>kind</th><th>utc</th><th>basis</th><th>problems</th></tr>")
    for p in store.recent_punches(50):
        parts.append(f"<tr><td>{e(p['device_id'])}</td><td>{p['seq']}</td><td>{e(p['employee'] or '')}</td>"
                     f"<td>{e(p['method'] or '')}</td><td>{e(_kind(p))}</td><td>{e(p['utc'] or '-')}"
                     f"</td><td>{e(p['basis'] or '-')}</td><td>{e(p['problems'] or '')}</td></tr>")
    parts.append("</table></body></html>")
    return "".join(parts)


def _kind(p: dict) -> str:
    """The punch's kind as the terminal derives it now, else the hashed one (records before derived kinds)."""
    return ((p.get("derived") or {}).get("kind")) or p.get("kind") or ""


def make_app(db) -> FastAPI:
    """The app over the store at `db` (SQLite path or postgresql:// URL), created if needed."""
    return build_app(open_store(db))


def openapi_document() -> dict:
    """The generated OpenAPI document, without a store (for tests and docs)."""
    return build_app(None).openapi()


def serve(app: FastAPI, host: str, port: int, on_ready=None, threads: int = 4) -> None:
    """Serve with uvicorn in this thread until SIGINT/SIGTERM; on_ready(url) once the socket listens.
    `threads` bounds the requests handled at once (the rest wait in the listen queue's place: 503)."""
    asgi.serve_forever(app, host, port, on_ready=on_ready, limit_concurrency=max(8, threads * 16))
