"""The plumbing the three HTTP servers share (the kiosk/admin server with the pull API, and the reference
central server): FastAPI apps whose errors are JSON bodies {"error": "..."}, request-body limits declared
per route and enforced before any byte of the body is read, JSON bodies parsed with a bound on nesting and
checked by pydantic models, and uvicorn serving an app in a background thread (or the foreground) with
bounded idle and body times. See docs/http-servers.md for why FastAPI + uvicorn and how to add an endpoint.

The terminal's core wings do not import this module (they may not import sync/): terminal/web/ uses only
FastAPI/Starlette primitives, and the web-server start-up code puts its routers on an app made here.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("presensi.http")

LIMIT_KEY = "x-body-limit"  # in a route's openapi_extra: its request-body limit in bytes (shown in OpenAPI)
DEFAULT_LIMIT = 64 * 1024  # routes that declare nothing: JSON and forms of a few fields
BODY_TIMEOUT = 30.0  # seconds a client may take between two pieces of its body (waitress had channel_timeout)
DRAIN_LIMIT = 1024 * 1024  # a refused body up to this size is read and dropped before the answer (see BodyLimit)
DRAIN_TIMEOUT = 5.0  # seconds the server waits for such a body before it answers anyway
IDLE_TIMEOUT = 30.0  # seconds an open connection may stay silent before the server closes it
JSON_ERROR_STATUS = "x-validation-status"  # in openapi_extra: the status a failed validation answers (400)


# -- errors ----------------------------------------------------------------------------------------------

class ErrorBody(BaseModel):
    """Every error answer of the three servers."""

    error: str


ERROR_TEXT = {303: "see the login page", 304: "not modified", 400: "malformed request",
              401: "missing or wrong credentials", 403: "refused", 404: "no such resource",
              405: "method not allowed", 408: "the body did not arrive in time", 413: "body too large",
              415: "unsupported body encoding", 429: "too many requests", 503: "not available right now"}


def errors(*codes: int) -> dict:
    """The `responses=` of a route: each error status documented with the {"error": ...} body."""
    return {c: {"description": ERROR_TEXT.get(c, "error"), "model": ErrorBody} for c in codes}


def limit(nbytes: int, **extra) -> dict:
    """The `openapi_extra=` of a route whose body may be up to `nbytes` (enforced by BodyLimit)."""
    return {LIMIT_KEY: nbytes, **extra}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


def one_sentence(exc: RequestValidationError | ValidationError) -> str:
    """The first problem pydantic found, as one line a client developer can act on."""
    problems = exc.errors()
    if not problems:
        return "malformed request"
    first = problems[0]
    loc = [str(x) for x in first.get("loc", ())]
    where, name = (loc[0], loc[1]) if len(loc) >= 2 and loc[0] in ("query", "path", "header") else ("", "")
    kind, ctx = first.get("type", ""), first.get("ctx") or {}
    if where:
        what = f"{where} parameter {name!r}"
        if kind in ("int_parsing", "int_type", "value_error", "int_from_float"):
            return f"{what} must be a whole number"
        if "ge" in ctx or "gt" in ctx:
            return f"{what} must be at least {ctx.get('ge', ctx.get('gt'))}"
        if "le" in ctx or "lt" in ctx:
            return f"{what} must be at most {ctx.get('le', ctx.get('lt'))}"
        return f"{what}: {first.get('msg', 'invalid')}"
    path = ".".join(x for x in loc if x != "body") or "body"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{path}: {first.get('msg', 'invalid')}{more}"


Render = Callable[[Request, int, str, dict | None], Response | None]


def install_errors(app: FastAPI, render: Render | None = None) -> None:
    """Errors as {"error": message} with the status and headers the handler gave. `render` may answer
    instead (the kiosk shows browsers an HTML page); it returns None to keep the JSON answer."""

    def answer(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
        page = render(request, status, message, headers) if render is not None else None
        return page if page is not None else error_response(status, message, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and "Allow" not in headers:
            headers["Allow"] = ", ".join(sorted(_allowed(app, request.scope)))
        message = exc.detail if isinstance(exc.detail, str) and exc.detail != _default_detail(exc.status_code) \
            else _default_message(request, exc.status_code)
        return answer(request, exc.status_code, message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        status = route_extra(app, request.scope).get(JSON_ERROR_STATUS, 400)
        return answer(request, status, one_sentence(exc))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        # the client gave up before its body arrived (its own timeout, a slow line): not a server fault, and
        # nothing was handled; the answer goes nowhere
        log.info("client went away during %s %s before its request was read", request.method, request.url.path)
        return error_response(400, "the request was not received completely")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        # a bug must not kill the server; the message carries no request data, the log has the traceback
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__})")


def _default_detail(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _default_message(request: Request, status: int) -> str:
    if status == 404:
        return f"no such resource: {request.url.path}"
    if status == 405:
        return f"method {request.method} not allowed here"
    return _default_detail(status) or "error"


def _routes(app) -> list[tuple[Any, set[str], dict]]:
    """(path regex, methods, openapi_extra) of every route of `app`, included routers too (computed once:
    routes are all declared before the server starts)."""
    table = getattr(app.state, "route_table", None)
    if table is None:
        table = []
        for ctx in iter_route_contexts(app.routes):
            path = getattr(ctx, "path", None)
            if path:
                table.append((compile_path(path)[0], set(getattr(ctx, "methods", None) or ()),
                              dict(getattr(ctx, "openapi_extra", None) or {})))
        app.state.route_table = table
    return table


def route_extra(app, scope: Scope) -> dict:
    """The openapi_extra of the route this request is for ({} when none matches)."""
    path, method = scope.get("path", ""), scope.get("method", "GET")
    for regex, methods, extra in _routes(app):
        if regex.match(path) and (method in methods or not methods):
            return extra
    return {}


def _allowed(app, scope: Scope) -> set[str]:
    methods = {m for regex, ms, _ in _routes(app) if regex.match(scope.get("path", "")) for m in ms}
    return methods or {"GET"}


# -- body limits -----------------------------------------------------------------------------------------

class BodyTooLarge(HTTPException):
    def __init__(self, nbytes: int):
        super().__init__(413, f"request body too large: this endpoint takes at most {_size(nbytes)}",
                         headers={"Connection": "close"})


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else \
        f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} bytes"


class BodyLimit:
    """ASGI middleware: the limit of the route a request is for (its openapi_extra LIMIT_KEY, else the
    default) is enforced before the app sees the request: a Content-Length above it gets 413 at once,
    before one byte of the body is read; a chunked body is counted as it arrives and stopped at the limit.
    A client that stalls in the middle of its body gets 408 after BODY_TIMEOUT seconds; once the body is
    complete nothing is timed any more (a stream such as the kiosk's /events waits on the client for hours).

    A refused body of up to DRAIN_LIMIT bytes is read and dropped before the 413 goes out: the answer closes
    the connection, and a socket closed with bytes of the request still arriving makes the kernel reset the
    connection, which can destroy the answer before the client has read it (a client sending the body after
    its headers saw "connection reset" instead of 413 on a loaded machine). The app never sees those bytes,
    and nothing is kept. A larger body, or one whose client waits for `100 Continue`, is not drained: the
    answer goes out at once, and such a client reads it before it sends anything."""

    def __init__(self, app: ASGIApp, routes_of: FastAPI, default: int = DEFAULT_LIMIT,
                 body_timeout: float = BODY_TIMEOUT):
        self.app, self.routes_of, self.default, self.body_timeout = app, routes_of, default, body_timeout

    def limit_for(self, scope: Scope) -> int:
        return int(route_extra(self.routes_of, scope).get(LIMIT_KEY, self.default))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_ = self.limit_for(scope)
        declared = _content_length(scope)
        if declared == -1:
            await _send(scope, receive, send, error_response(400, "invalid Content-Length header",
                                                             {"Connection": "close"}))
            return
        if declared is not None and declared > limit_:
            if declared <= DRAIN_LIMIT and not _expects_continue(scope):
                await _drain(receive, declared)
            await _send(scope, receive, send, error_response(413, BodyTooLarge(limit_).detail,
                                                             {"Connection": "close"}))
            return
        received = 0
        started = body_done = False

        async def counted() -> Message:
            nonlocal received, body_done
            if body_done:  # the body is all here: a streaming answer now waits for the client to leave
                return await receive()
            try:
                with anyio.fail_after(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.body_timeout:g} s",
                                    headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit_:
                    raise BodyTooLarge(limit_)
                body_done = not message.get("more_body", False)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except HTTPException as e:  # raised while reading the body outside any exception handler
            if started or e.status_code not in (408, 413):
                raise
            await _send(scope, receive, send, error_response(e.status_code, e.detail, e.headers))


async def _drain(receive: Receive, nbytes: int) -> None:
    """Read up to `nbytes` of the body and drop them, for at most DRAIN_TIMEOUT seconds."""
    got = 0
    with anyio.move_on_after(DRAIN_TIMEOUT):
        while got < nbytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            got += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _expects_continue(scope: Scope) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in scope.get("headers", ()))


def _content_length(scope: Scope) -> int | None:
    """The declared length; None without one, -1 when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


async def _send(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    await response(scope, receive, send)


# -- JSON bodies -----------------------------------------------------------------------------------------

MAX_INFLATED = 64 * 1024 * 1024  # a gzip body may expand to this (10,000 punches take about 6 MiB)


def gunzip(raw: bytes, max_out: int = MAX_INFLATED) -> bytes:
    """Decompress with a bound, so a small gzip bomb cannot take the server's memory."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, max_out + 1)
    except zlib.error:
        raise HTTPException(400, "body is not valid gzip") from None
    if len(out) > max_out or inflater.unconsumed_tail:
        raise HTTPException(413, f"the decompressed body exceeds {max_out // 2**20} MiB; send smaller batches")
    if not inflater.eof:
        raise HTTPException(400, "body is not valid gzip (truncated)")
    return out


def parse_json(raw: bytes) -> Any:
    """JSON text → value; malformed or too deeply nested text is the client's fault (400), never a 500."""
    try:
        return json.loads(raw or b"null")
    except RecursionError:
        raise HTTPException(400, "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from None


async def read_json(request: Request, model: type[BaseModel] | None = None, *, gzip: bool = False,
                    default: Any = None) -> Any:
    """The request's JSON body, checked against `model` (400 with one sentence otherwise). Returns the
    parsed JSON itself, not the model: the handlers' contract is the JSON they always got (records are
    hashed as sent, unknown fields kept)."""
    raw = await request.body()
    if gzip and (request.headers.get("content-encoding") or "").lower() == "gzip":
        raw = gunzip(raw)
    value = parse_json(raw) if raw else default
    if model is not None:
        try:
            model.model_validate(value)
        except ValidationError as e:
            raise HTTPException(400, one_sentence(e)) from None
        except RecursionError:
            raise HTTPException(400, "body is nested too deeply") from None
    return value


def json_request(model: type[BaseModel], nbytes: int, media_type: str = "application/json") -> dict:
    """`openapi_extra=` of a route that reads its body with read_json: the body's schema (from the model,
    inlined so the document needs no extra components) and its size limit."""
    return limit(nbytes, requestBody={"required": True, "content": {
        media_type: {"schema": inline_refs(model.model_json_schema())}}})


def inline_refs(schema: dict) -> dict:
    """A pydantic JSON schema with its $defs substituted in place (the models used here are not recursive)."""
    defs = schema.get("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    return walk(schema)


# -- apps ------------------------------------------------------------------------------------------------

def make_app(*, title: str, version: str, description: str = "", openapi_url: str | None = "/openapi.json",
             render: Render | None = None, default_limit: int = DEFAULT_LIMIT) -> FastAPI:
    """A FastAPI app with the shared plumbing: JSON errors, body limits, no interactive docs (they would
    load scripts from the internet), and an OpenAPI document without FastAPI's 422 (validation fails
    with the endpoint's own status, 400 unless declared)."""
    app = FastAPI(title=title, version=version, description=description, openapi_url=openapi_url,
                  docs_url=None, redoc_url=None)
    install_errors(app, render)
    app.add_middleware(BodyLimit, routes_of=app, default=default_limit)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


def openapi(app: FastAPI, routes: list | None = None) -> dict:
    """The generated document, with 422 replaced by the 400 our handlers give, cached on the app."""
    cached = getattr(app.state, "openapi_doc", None) if routes is None else None
    if cached is not None:
        return cached
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=routes if routes is not None else app.routes)
    for item in doc.get("paths", {}).values():
        for op in item.values():
            responses = op.get("responses", {})
            if "422" in responses:
                del responses["422"]
                responses.setdefault("400", {"description": ERROR_TEXT[400], "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if any("ErrorBody" in json.dumps(op) for item in doc.get("paths", {}).values() for op in item.values()):
        schemas.setdefault("ErrorBody", inline_refs(ErrorBody.model_json_schema()))
    doc = as_openapi_30(doc)
    if routes is None:
        app.state.openapi_doc = doc
    return doc


def as_openapi_30(doc: dict) -> dict:
    """FastAPI writes OpenAPI 3.1 (JSON Schema 2020-12), where an "integer" includes 1.0 and null is a
    type. The servers' contract is OpenAPI 3.0.3, as it was (integers are integers; clients' generators
    know 3.0 best): nullable types become `nullable: true`."""
    def walk(node):
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        options = node.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del node["anyOf"]
            if len(rest) == 1:
                node = {**rest[0], **node}
            elif rest:
                node["anyOf"] = rest
            node["nullable"] = True
        return {k: walk(v) for k, v in node.items()}
    out = walk(doc)
    out["openapi"] = "3.0.3"
    return out


# -- serving ---------------------------------------------------------------------------------------------

class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, also closing a new connection that sends nothing for IDLE_TIMEOUT seconds
    (uvicorn times out only idle keep-alive connections, after a first request)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


class _FreshDate:
    """Every response's Date header made when the response starts (RFC 9110: the time the message was
    generated). uvicorn's own is refreshed by its main loop about once a second, so on a busy machine it can
    be more than a second old: a terminal without a signed time sample takes its time from this header
    (sync/device/time_client.py, ±0.5 s), and a stale one put its interval beside the truth."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"date"]
                headers.append((b"date", email.utils.formatdate(time.time(), usegmt=True).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_dated)


def _config(app: ASGIApp, *, limit_concurrency: int | None, idle_timeout: float) -> uvicorn.Config:
    return uvicorn.Config(_FreshDate(app), http=_Protocol, date_header=False, loop="asyncio", lifespan="off",
                          access_log=False,
                          log_level="warning", timeout_keep_alive=int(idle_timeout), server_header=False,
                          timeout_graceful_shutdown=2, limit_concurrency=limit_concurrency,
                          h11_max_incomplete_event_size=16 * 1024, proxy_headers=False)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0 = any free port); OSError when the address cannot be used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class Served:
    """An app served by uvicorn in a background thread; `stop()` ends it (open streams included)."""

    def __init__(self, app: ASGIApp, host: str, port: int, *, name: str = "http",
                 limit_concurrency: int | None = None, idle_timeout: float = IDLE_TIMEOUT):
        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(_config(app, limit_concurrency=limit_concurrency, idle_timeout=idle_timeout))
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)  # uvicorn has no start event; it sets `started` within milliseconds
        if not self.server.started:
            self.stop()
            raise OSError(f"the HTTP server on {host}:{self.port} did not start")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except Exception:  # logged: the thread is a daemon and nobody else would see it
            log.exception("the HTTP server on %s:%s stopped", self.host, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)
        self.sock.close()

    close = stop


def serve_forever(app: ASGIApp, host: str, port: int, on_ready: Callable[[str], None] | None = None,
                  limit_concurrency: int | None = None) -> None:
    """Serve in this thread until SIGINT/SIGTERM (uvicorn handles both); on_ready(url) once listening."""
    sock = bind(host, port)
    server = uvicorn.Server(_config(app, limit_concurrency=limit_concurrency, idle_timeout=IDLE_TIMEOUT))
    if on_ready is not None:
        on_ready(f"http://{host}:{sock.getsockname()[1]}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
