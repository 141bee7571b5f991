"""The reference central server: a FastAPI app (plumbing in sync/asgi.py) served by uvicorn.

`make_app(db)` opens (or creates) the store: a SQLite path or a postgresql:// URL. Device endpoints need
`Authorization: Bearer <token>` of that device (401 otherwise, 403 for another device's token, without
naming the device the token belongs to) AND a request signed by the device key bound at registration
(sync/wire/signed.py): the token says who connects, only the signature makes an upload count. A request
that fails either is refused before anything is stored, and alarmed. The OpenAPI document is generated
from the routes and models below and served at /api/v1/openapi.json.
"""


import hashlib
import json
import re
import secrets
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from sync import asgi
from sync.wire import signed, timesample
from terminal import __version__
from terminal.log import chain
from terminal.timing import clock

from . import enrolments, ingest, pages, republish
from .storage import PUNCH_COLUMNS, Store, code_hash, open_store

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SUSPICIOUS_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")
MAX_PHOTO = 8 * 1024 * 1024
MAX_JSON = asgi.MAX_INFLATED  # decompressed; 10,000 punches take about 6 MiB
# Bodies as sent (gzip or not): a batch of 10,000 punches (64 MiB, as before); the small ones much less.
PUNCHES_LIMIT = 64 * 1024 * 1024
TIMES_LIMIT = 16 * 1024 * 1024
FAULTS_LIMIT = 16 * 1024 * 1024
SMALL_LIMIT = 256 * 1024  # heartbeat, time request
ENROLMENTS_LIMIT = 512 * 1024  # 100 templates of 512 bytes as base64, with their fields
MAX_ENROLMENTS = 100
DIAGNOSTICS_LIMIT = 256 * 1024  # one fault event's diagnostics as JSON
DEV = "/api/v1/devices/{device_id}"


UNSYNCED_ERROR_NS = 100_000_000  # the clock error the server claims when its kernel cannot say


def server_clock_error() -> tuple[int, bool]:
    """(error bound in ns, synchronised) of this server's own clock, from the kernel's NTP status."""
    reading = clock.read()
    if reading.kernel_synced and reading.maxerror_us is not None:
        return reading.maxerror_us * 1000, True
    return UNSYNCED_ERROR_NS, False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def add_device(store: Store, device_id: str, public_key: str | None = None, *, rebind: bool = False,
               actor: str = "cli", reason: str = "") -> dict:
    """Register a device (rebind=True: a re-imaged terminal, audited) and return what the terminal's config
    needs. With `public_key` that key is bound now; without, a one-time enrolment code is issued that the
    device's first signed request redeems (then it expires; unused, it expires after three days)."""
    if public_key is not None:
        try:
            chain.public_key_from_b64(public_key)
        except ValueError as e:
            raise ValueError(f"--public-key: {e}; copy the key `presensi init` printed on the terminal") from None
    token = new_token()
    code = None if public_key else new_token()[:24]
    store.add_device(device_id, token_hash(token), public_key, code and code_hash(code), rebind=rebind,
                     actor=actor, reason=reason)
    out = {"device": device_id, "token": token, "server_key": store.server_public_key()}
    if public_key:
        out["public_key_fingerprint"] = chain.key_fingerprint(public_key)
    else:
        out["enrolment_code"] = code
    return out


# -- the request and answer models (the OpenAPI document is generated from them) -----------------------
# Text the databases store as-is: no NUL (PostgreSQL text cannot hold it). Free-form objects (details,
# diagnostics, health) are stored as JSON text and may hold anything. The models accept what ingest.py
# accepts (it checks again, with its own messages): they are the contract, not a second opinion.

Text = Annotated[str, StringConstraints(pattern=r"^[^\u0000]*$", max_length=4096)]
Short = Annotated[str, StringConstraints(pattern=r"^[^\u0000]*$", max_length=64)]


def Bounded(field: str):  # noqa: N802  (a type, named like one)
    """Text of one record field, as long as ingest.TEXT_LIMITS allows."""
    return Annotated[str, StringConstraints(pattern=r"^[^\u0000]*$", max_length=ingest.TEXT_LIMITS[field])]


Int64 = Annotated[int, Field(ge=-(2**63 - 1), le=2**63 - 1)]
Seq = Annotated[int, Field(ge=1, le=ingest.MAX_SEQ)]
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
    log_id: Bounded("log_id")
    seq: Seq
    employee: Bounded("employee")
    method: Bounded("method")
    kind: Bounded("kind") | None = None
    details: dict[str, Any] | Annotated[Text, StringConstraints(max_length=ingest.DETAILS_LIMIT)] = Field(
        default_factory=dict)
    boot_id: Bounded("boot_id")
    monoraw_ns: Int64
    boottime_ns: Int64
    realtime_ns: Int64
    timex_status: Int64 | None = None
    maxerror_us: Int64 | None = None
    latitude: Degrees | None = None
    longitude: Degrees | None = None
    photo_sha256: Bounded("photo_sha256") | None = None
    prev_hash: Hex64
    hash: Hex64
    utc: Bounded("utc") | None = None
    earliest: Bounded("earliest") | None = None
    latest: Bounded("latest") | None = None
    basis: Bounded("basis") | None = None
    flags: Annotated[list[Bounded("flag")], Field(max_length=ingest.MAX_FLAGS)] | None = None
    derived: DerivedValues | None = None


class Checkpoint(Strict):
    log_id: Short
    seq: Seq
    hash: Short
    signature: Annotated[str, StringConstraints(pattern=r"^[^\u0000]*$", max_length=128)]
    public_key: Short = None  # type: ignore[assignment]  # optional, but never null
    signed_realtime_ns: Int64 = None  # type: ignore[assignment]


class Batch(Strict):
    log_id: Annotated[Short, StringConstraints(min_length=1)]
    log_announcement: Annotated[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/=]*$", max_length=128)]
                                | None, Field(
        description="base64 Ed25519 signature by the device key over `presensi-log:v1:<device>:<log_id>` "
                    "(sync/wire/signed.py); required for a log_id the server has not seen")] = None
    after_seq: Annotated[int, Field(ge=0, le=ingest.MAX_SEQ, description="the terminal holds every record it has "
                                                                  "after this seq in `records`")] = None  # type: ignore[assignment]
    records: Annotated[list[PunchRecord], Field(max_length=ingest.MAX_ITEMS)]
    checkpoints: list[Checkpoint] = Field(default_factory=list)


class Ack(BaseModel):
    acked_through: int
    stored: int | None = None
    duplicates: int | None = None
    flagged: int | None = None


class Head(Strict):
    seq: Annotated[int, Field(ge=0, le=ingest.MAX_SEQ)] = 0
    hash: Text | None = None


class Heartbeat(Strict):
    version: Short = None  # type: ignore[assignment]
    log_id: Short = None  # type: ignore[assignment]
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
    fault_key: Annotated[Text, StringConstraints(max_length=256)] | None = None
    event: Short | None = None
    part: Short | None = None
    category: Short | None = None
    message: Text | None = None
    diagnostics: Any = None
    photo_sha256: Text | None = None
    realtime_ns: Int64 | None = None


class Faults(Strict):
    events: Annotated[list[FaultEvent], Field(max_length=ingest.MAX_ITEMS)]


class FaultsAck(BaseModel):
    acked_through: int


UtcText = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                                   r"(\.[0-9]{1,6})?(Z|\+00:00)$")]


class DerivedTime(Strict):
    seq: Seq
    utc: Annotated[UtcText | None, Field(description="ISO 8601 UTC, inside [earliest, latest]")] = None
    earliest: Annotated[UtcText | None, Field(description="ISO 8601 UTC")] = None
    latest: Annotated[UtcText | None, Field(description="ISO 8601 UTC")] = None
    basis: Annotated[str | None, Field(json_schema_extra={"enum": list(signed.TIME_BASES)})] = None
    flags: Annotated[list[Bounded("flag")], Field(max_length=ingest.MAX_FLAGS)] | None = None
    derived: DerivedValues | None = None


class Times(Strict):
    log_id: Bounded("log_id")
    times: Annotated[list[DerivedTime], Field(max_length=ingest.MAX_ITEMS)]


class TimesAck(BaseModel):
    updated: int


class ChainHead(Strict):
    model_config = ConfigDict(strict=True, extra="forbid")
    seq: Annotated[int, Field(ge=0, le=ingest.MAX_SEQ)]
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


class Enrolment(Strict):
    """A template enrolled at the terminal; `ref` is the terminal's own number for it (answered back)."""
    ref: Seq
    employee: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    modality: Literal["face", "finger"]
    sealed: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/=]*$", max_length=1024),
                      Field(description="the template sealed to the server's enrolment key (sync/wire/"
                                        "sealedtemplate.py): a face template as 128 little-endian float32, or a "
                                        "512-byte ZhianTec characteristics file")]
    created_ns: Int64 | None = None


class Enrolments(Strict):
    enrolments: Annotated[list[Enrolment], Field(min_length=1, max_length=MAX_ENROLMENTS)]


class EnrolmentResult(BaseModel):
    ref: int
    status: Annotated[str, Field(description="accepted, pending (waits for approval), duplicate or refused")]
    reason: str | None = None
    decision: str | None = None


class EnrolmentsAck(BaseModel):
    results: list[EnrolmentResult]
    roster_version: Annotated[int | None, Field(description="the roster version that carries the accepted "
                                                            "enrolments")] = None


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


# -- the signed envelope (sync/wire/signed.py) ----------------------------------------------------------

ALARM_EVERY_NS = 60 * 10**9  # refused requests of one kind raise one alarm a minute per device, not a flood


def refuse(store: Store, dev: str, status: int, kind: str, message: str, detail: str = "") -> HTTPException:
    """Alarm (rate-limited) and return the HTTPException that refuses the request; nothing else is stored."""
    now, last = time.monotonic_ns(), store.refusal_alarms
    if now - last.get((dev, kind), -ALARM_EVERY_NS) >= ALARM_EVERY_NS:
        last[(dev, kind)] = now
        store.alarm(dev, kind, f"{message}{detail}"[:500])
    return HTTPException(status, message)


async def verify_signed(store: Store, request: Request, dev: str) -> None:
    """The request must be signed by the key bound to `dev` (or redeem its enrolment code) and not replayed.
    The body is read here (within the route's limit); the checks that touch the database run in the thread
    pool, so a long batch transaction never stalls the event loop."""
    try:  # before the body is read: an unsigned request costs no more than its headers
        env = signed.parse(request.headers)
    except signed.BadEnvelope as e:
        raise await run_in_threadpool(refuse, store, dev, 401, "unsigned", str(e)) from None
    body = await request.body()  # what was sent (gzip or not): the signature covers those bytes
    target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    await run_in_threadpool(_verify_signed, store, env, request.method, target + (f"?{query}" if query else ""),
                            dev, body)


def _verify_signed(store: Store, env: signed.Envelope, method: str, target: str, dev: str, body: bytes) -> None:
    try:
        signed.verify(env, method, target, dev, body)
    except signed.BadEnvelope as e:
        raise refuse(store, dev, 401, "bad-request-signature", str(e)) from None
    bound = (store.device(dev) or {}).get("public_key")
    if bound is None:
        outcome = store.redeem_enrolment(dev, env.enrolment_code, env.public_key)
        if outcome == "already-bound" and (store.device(dev) or {}).get("public_key") == env.public_key:
            outcome = "bound"  # a concurrent request of the same device redeemed the code a moment ago
        if outcome != "bound":
            reason = {"no-code": "the device has no bound key and the request carries no enrolment code",
                      "wrong-code": "the enrolment code is wrong",
                      "expired": "the enrolment code has expired (issue a new one with rebind-device)",
                      "already-bound": "the device was bound meanwhile"}[outcome]
            raise refuse(store, dev, 403, "not-enrolled", f"request refused: {reason}",
                         f" (key {chain.key_fingerprint(env.public_key)})")
    elif env.public_key != bound:
        raise refuse(store, dev, 403, "unknown-key", "request refused: signed by a key that is not bound to this "
                     "device (a copied token, or a re-imaged terminal not yet re-bound with "
                     "`presensi server rebind-device`)", f" (key {chain.key_fingerprint(env.public_key)})")
    if not store.use_nonce(dev, env.nonce):
        raise refuse(store, dev, 409, "replay", "request refused: this signed request was received before "
                     "(a replay)")


def _check_announcement(store: Store, dev: str, log_id: str, signature) -> None:
    """A log_id the server has not seen is taken only with the device's signed announcement."""
    if store.log_known(dev, log_id):
        return
    key = store.device(dev)["public_key"]
    if not signed.announcement_valid(key, dev, log_id, signature):
        raise refuse(store, dev, 403, "unannounced-log", "a new log_id needs a log_announcement signed by the "
                     "device key", f": log {log_id[:64]!r}")
    if store.announce_log(dev, log_id, key, signature):  # not its first log: a new database on the terminal
        store.alarm(dev, "new-log", f"device announced another punch log {log_id}: the terminal started a new "
                                    "database (check that nothing of the old one is undelivered)")


def _call(fn, *args):
    try:
        return fn(*args)
    except ingest.BadBatch as e:
        raise HTTPException(400, str(e)) from None


# -- the app --------------------------------------------------------------------------------------------

def build_app(store: Store | None, page_settings: pages.Settings | None = None) -> FastAPI:
    """The app over `store` (None: only to generate the OpenAPI document): the device API and the pages
    for people behind their login (sync/server/pages/)."""
    app = asgi.make_app(
        title="presensi-edge reference central server", version=__version__, openapi_url="/api/v1/openapi.json",
        description="Sync API for attendance terminals: push of hash-chained punches, heartbeat, fault "
                    "reports, photos, corrected times, signed roster bundles and time.", render=pages.error_page)
    app.store = store  # type: ignore[attr-defined]  # tests and the CLI reach the store through the app
    app.state.pages = page_settings or pages.Settings()
    app.include_router(router(store))
    app.include_router(pages.router())
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
        if token_dev != device_id:  # never say whose token it is: that would map tokens to devices
            raise HTTPException(403, "this token does not belong to this device")
        return token_dev

    async def signed_device(request: Request, dev: Annotated[str, Depends(device)]) -> str:
        await verify_signed(store, request, dev)
        return dev

    async def signed_token_device(request: Request, dev: Annotated[str, Depends(token_device)]) -> str:
        await verify_signed(store, request, dev)
        return dev

    Device = Annotated[str, Depends(signed_device)]
    errs = asgi.errors(400, 401, 403, 413)

    @r.post(f"{DEV}/punches", summary="Deliver a batch of punches (idempotent; dedupe on device, log_id, seq)",
            response_model=None, responses={200: {"model": Ack, "description": "stored; acked_through = highest "
                                                  "contiguous seq"}, **errs},
            openapi_extra=asgi.json_request(Batch, PUNCHES_LIMIT))
    def punches(dev: Device, body: Annotated[Any, Depends(JsonBody(Batch))]) -> dict:
        log_id, after, records, checkpoints = _call(ingest.validate_batch, body)
        _check_announcement(store, dev, log_id, body.get("log_announcement"))
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
        return Response(republish.bundle_for(store, dev, latest), 200, {"Content-Type": "application/octet-stream",
                                                "X-Roster-Version": str(latest["version"])})

    @r.post(f"{DEV}/enrolments", summary="Templates enrolled at the terminal, for every terminal's roster",
            response_model=None, responses={200: {"model": EnrolmentsAck, "description": "per enrolment: "
                                                  "accepted, pending, duplicate or refused"}, **errs},
            openapi_extra=asgi.json_request(Enrolments, ENROLMENTS_LIMIT))
    def enrolment_upload(dev: Device, body: Annotated[Any, Depends(JsonBody(Enrolments))]) -> dict:
        results = enrolments.receive(store, dev, body["enrolments"], republish.roster_ids(store))
        version = None
        if any(r["status"] == "accepted" for r in results):
            version = republish.publish_next(store)["version"]
        return {"results": results, "roster_version": version}

    @r.post("/api/v1/time", summary="Signed time answer (see sync/wire/timesample.py)", response_model=None,
            responses={200: {"description": "signed answer", "content": {"application/json": {
                "schema": {"type": "object"}}}}, **asgi.errors(400, 401, 403, 413, 503)},
            openapi_extra=asgi.json_request(TimeRequest, SMALL_LIMIT))
    def time_answer(dev: Annotated[str, Depends(signed_token_device)],
                    body: Annotated[Any, Depends(JsonBody(TimeRequest))]) -> dict:
        t2_ns = time.time_ns()
        if isinstance(body, dict) and isinstance(body.get("device_id"), str) and body["device_id"] != dev:
            raise HTTPException(403, "this token does not belong to the device_id in the request")
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
            and 1 <= e["id"] <= ingest.MAX_SEQ for e in events):
        raise HTTPException(400, "body must be {\"events\": [{\"id\": positive integer, ...}]}")
    for e in events:
        for k in ("fault_key", "event", "part", "category", "message", "photo_sha256"):
            if e.get(k) is not None and not isinstance(e[k], str):
                raise HTTPException(400, f"events[].{k} must be a string or null")
        if len(json.dumps(e.get("diagnostics"), ensure_ascii=False)) > DIAGNOSTICS_LIMIT:
            raise HTTPException(400, f"events[].diagnostics is larger than {DIAGNOSTICS_LIMIT} characters")
        rt = e.get("realtime_ns")
        if rt is not None and (not isinstance(rt, int) or isinstance(rt, bool) or abs(rt) >= 2**63):
            raise HTTPException(400, "events[].realtime_ns must be a 64-bit integer or null")
    return events


def make_app(db, page_settings: pages.Settings | None = None) -> FastAPI:
    """The app over the store at `db` (SQLite path or postgresql:// URL), created if needed."""
    return build_app(open_store(db), page_settings)


def openapi_document() -> dict:
    """The generated OpenAPI document, without a store (for tests and docs)."""
    return build_app(None).openapi()


def serve(app: FastAPI, host: str, port: int, on_ready=None, threads: int = 4) -> None:
    """Serve with uvicorn in this thread until SIGINT/SIGTERM; on_ready(url) once the socket listens.
    `threads` bounds the requests handled at once (the rest wait in the listen queue's place: 503)."""
    asgi.serve_forever(app, host, port, on_ready=on_ready, limit_concurrency=max(8, threads * 16))
