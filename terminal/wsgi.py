"""A very small WSGI toolkit shared by the terminal's web server and the sync API servers: a router over
path patterns, a request wrapper with bounded body reading, and JSON responses. Apps are plain WSGI
callables, served by waitress in production and called directly in tests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

MAX_BODY = 16 * 1024 * 1024


class HTTPError(Exception):
    """Raised by a handler to answer with an error status and a JSON body {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Request:
    environ: dict
    params: dict = field(default_factory=dict)  # path parameters from the route pattern
    max_body: int = MAX_BODY
    _body: bytes | None = None

    @property
    def method(self) -> str:
        return self.environ["REQUEST_METHOD"].upper()

    @property
    def path(self) -> str:
        return self.environ.get("PATH_INFO", "") or "/"

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.environ.get("QUERY_STRING", "")).items()}

    def header(self, name: str, default: str | None = None) -> str | None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if name.lower() in ("content-type", "content-length"):
            key = name.upper().replace("-", "_")
        return self.environ.get(key, default)

    @property
    def remote_addr(self) -> str:
        return self.environ.get("REMOTE_ADDR", "")

    def body(self) -> bytes:
        if self._body is None:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise HTTPError(400, "invalid Content-Length") from None
            if length < 0:
                raise HTTPError(400, "invalid Content-Length")
            if length > self.max_body:
                raise HTTPError(413, f"request body too large (limit {self.max_body} bytes)")
            self._body = self.environ["wsgi.input"].read(length) if length else b""
        return self._body

    def json(self):
        raw = self.body()
        if self.header("Content-Encoding", "").lower() == "gzip":
            import gzip

            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                raise HTTPError(400, "body is not valid gzip") from None
        try:
            return json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"body is not valid JSON: {e}") from None

    def int_query(self, name: str, default: int, lo: int = 0, hi: int = 2**62) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, f"query parameter {name!r} must be a whole number") from None
        if not lo <= value <= hi:
            raise HTTPError(400, f"query parameter {name!r} must be between {lo} and {hi}")
        return value


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    headers: dict = field(default_factory=dict)

    @classmethod
    def json(cls, data, status: int = 200, headers: dict | None = None) -> Response:
        return cls(json.dumps(data, ensure_ascii=False).encode(), status,
                   {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(text.encode(), status, {"Content-Type": content_type})


Handler = Callable[[Request], Response]


class Router:
    """Routes `METHOD /path/{param}` to handlers; 404/405 and errors become JSON bodies."""

    def __init__(self):
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self.routes.append((method.upper(), re.compile(regex), handler))

    def route(self, method: str, pattern: str):
        def deco(fn):
            self.add(method, pattern, fn)
            return fn
        return deco

    def dispatch(self, req: Request) -> Response:
        allowed = []
        for method, regex, handler in self.routes:
            m = regex.match(req.path)
            if m:
                if method != req.method:
                    allowed.append(method)
                    continue
                req.params = m.groupdict()
                return handler(req)
        if allowed:
            raise HTTPError(405, f"method {req.method} not allowed here", {"Allow": ", ".join(allowed)})
        raise HTTPError(404, f"no such resource: {req.path}")

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        return serve(self.dispatch, environ, start_response)


def serve(handler: Handler, environ: dict, start_response) -> Iterable[bytes]:
    """Run a handler as a WSGI app: HTTPError → its status with a JSON error body; anything else → 500."""
    try:
        resp = handler(Request(environ))
    except HTTPError as e:
        resp = Response.json({"error": e.message}, e.status, e.headers)
    except Exception as e:  # never let a bug kill the server thread; the message carries no request data
        import logging

        logging.getLogger("presensi.http").exception("unhandled error")
        resp = Response.json({"error": f"internal error ({type(e).__name__})"}, 500)
    status = f"{resp.status} {HTTPStatus(resp.status).phrase}"
    headers = [("Content-Length", str(len(resp.body))), *resp.headers.items()]
    start_response(status, headers)
    return [resp.body]
