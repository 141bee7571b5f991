"""The terminal's pull API, for central servers that fetch punches instead of receiving pushes.

    GET /api/v1/punches?after_seq=N&limit=M   records (with derived time fields), cursor, latest checkpoint
    GET /api/v1/health                        health at a glance
    GET /api/v1/faults?after_id=N&limit=M     fault events (contract C5 table; empty where absent)
    GET /api/v1/openapi.json                  the OpenAPI document (public: it holds no data)

Every data operation needs `Authorization: Bearer <[web] token>` (401 otherwise); requests are rate
limited per client address with a token bucket of `[web] rate_limit` per second (429 + Retry-After);
malformed queries get 400. All errors have a JSON body {"error": ...}. The API is a WSGI app built with
terminal.wsgi; the daemon mounts it on `[web] listen` (`mount`), or runs it alone (`serve_pull_api`).
Client certificates: run a TLS proxy that requires one in front of a 127.0.0.1 listener (see OpenAPI).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sync.device.pullapi_openapi import MAX_SEQ, document
from terminal import __version__
from terminal.errors import LogError
from terminal.log import punchlog
from terminal.timing import timeline
from terminal.wsgi import HTTPError, Request, Response, Router, serve

log = logging.getLogger("presensi.pullapi")
PREFIX = "/api/v1/"
MAX_LIMIT = 5000
FAULT_FIELDS = ("id", "fault_key", "event", "part", "category", "message", "diagnostics", "photo_path",
                "photo_sha256", "realtime_ns")  # contract C5
DIGITS = re.compile(r"^-?[0-9]{1,19}$")
MAX_CLIENTS = 4096  # rate-limit buckets kept; the least recently seen are forgotten first


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


class PullAPI:
    """The WSGI app. One PunchLog connection per server thread (SQLite connections are not shared)."""

    def __init__(self, cfg, *, token: str | None = None, rate_limit: float | None = None,
                 max_limit: int = MAX_LIMIT, status: Callable[[], dict] | None = None):
        self.cfg = cfg
        self.status = status  # `presensi status` of this terminal, wired by terminal/app/web.py
        self.token = token if token is not None else cfg.web.token
        if not self.token:
            raise ValueError("the pull API needs [web] token; set it to a long random string")
        self.limiter = RateLimiter(rate_limit if rate_limit is not None else cfg.web.rate_limit)
        self.max_limit = max_limit
        self._local = threading.local()
        self._openapi = json.dumps(document(max_limit)).encode()
        self.router = Router()
        self.router.add("GET", "/api/v1/punches", self.punches)
        self.router.add("GET", "/api/v1/health", self.health)
        self.router.add("GET", "/api/v1/faults", self.faults)

    def __call__(self, environ, start_response):
        return serve(self.handle, environ, start_response)

    def handle(self, req: Request) -> Response:
        wait = self.limiter.take(req.remote_addr or "unknown")
        if wait:
            raise HTTPError(429, f"too many requests; at most {self.limiter.rate:g} per second, retry later",
                            {"Retry-After": str(max(1, round(wait + 0.5)))})
        if req.path == "/api/v1/openapi.json":
            if req.method not in ("GET", "HEAD"):
                raise HTTPError(405, f"method {req.method} not allowed here", {"Allow": "GET"})
            return Response(self._openapi, 200, {"Content-Type": "application/json"})
        self._authenticate(req)
        return self.router.dispatch(req)

    def _authenticate(self, req: Request) -> None:
        header = req.header("Authorization") or ""
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.token.encode())
        if not ok:
            why = "missing bearer token" if not header else "wrong bearer token"
            raise HTTPError(401, f"{why}: send 'Authorization: Bearer <token>' with the terminal's [web] token",
                            {"WWW-Authenticate": 'Bearer realm="presensi"'})

    def _log(self) -> punchlog.PunchLog:
        plog = getattr(self._local, "log", None)
        if plog is None:
            try:
                plog = punchlog.PunchLog(self.cfg.state_dir, checkpoint_every=self.cfg.log.checkpoint_every)
            except LogError as e:
                raise HTTPError(503, f"punch log unavailable: {e}") from None
            self._local.log = plog
        return plog

    # -- operations ------------------------------------------------------------------------------------

    def punches(self, req: Request) -> Response:
        after_seq = _query_int(req, "after_seq", 0, 0, MAX_SEQ)
        limit = _query_int(req, "limit", min(500, self.max_limit), 1, self.max_limit)
        plog = self._log()
        try:
            records = list(plog.records(after_seq=after_seq, limit=limit, batch=limit))
            head_seq, head_hash = plog.head()
            checkpoint = plog.latest_checkpoint()
        except LogError as e:
            raise HTTPError(503, f"punch log unavailable: {e}") from None
        records = _annotate(plog.conn, records)
        next_after = records[-1]["seq"] if records else max(after_seq, 0)
        return Response.json({
            "device": self.cfg.device.id, "log_id": plog.log_id, "records": records,
            "cursor": {"after_seq": next_after}, "next_after_seq": next_after,
            "more": next_after < head_seq, "head": {"seq": head_seq, "hash": head_hash}, "checkpoint": checkpoint,
        })

    def health(self, req: Request) -> Response:
        plog = self._log()
        head_seq, head_hash = plog.head()
        body = {"ok": True, "device": self.cfg.device.id, "version": __version__, "log_id": plog.log_id,
                "head": {"seq": head_seq, "hash": head_hash}, "checkpoint": plog.latest_checkpoint(),
                "time": _now(plog.conn), "status": self._status()}
        body["ok"] = all(p.get("ok", True) for p in body["status"].values() if isinstance(p, dict))
        return Response.json(body)

    def _status(self) -> dict:
        report = self.status() if self.status is not None else {}
        return {k: v for k, v in report.items() if isinstance(v, dict)}

    def faults(self, req: Request) -> Response:
        after_id = _query_int(req, "after_id", 0, 0, MAX_SEQ)
        limit = _query_int(req, "limit", min(500, self.max_limit), 1, self.max_limit)
        conn = self._log().conn
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='fault_events'").fetchone():
            return Response.json({"events": [], "next_after_id": after_id, "more": False, "supported": False})
        rows = conn.execute(f"SELECT {', '.join(FAULT_FIELDS)} FROM fault_events WHERE id > ? ORDER BY id LIMIT ?",
                            (after_id, limit + 1)).fetchall()
        events = [_fault(dict(r)) for r in rows[:limit]]
        return Response.json({"events": events, "next_after_id": events[-1]["id"] if events else after_id,
                              "more": len(rows) > limit, "supported": True})


def _query_int(req: Request, name: str, default: int, lo: int, hi: int) -> int:
    """Plain decimal digits only (Python's int() would also take ' 1', '1_0' and other scripts' digits)."""
    raw = req.query.get(name)
    if raw is None:
        return default
    if not DIGITS.match(raw):
        raise HTTPError(400, f"query parameter {name!r} must be a whole number")
    value = int(raw)
    if not lo <= value <= hi:
        raise HTTPError(400, f"query parameter {name!r} must be between {lo} and {hi}")
    return value


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

def mount(api, other_app=None):
    """One WSGI app for `[web] listen`: /api/v1/* to the pull API, the rest to other_app (kiosk, admin)."""
    def not_found(req: Request) -> Response:
        raise HTTPError(404, f"no such resource: {req.path}")

    def app(environ, start_response):
        if api is not None and (environ.get("PATH_INFO") or "").startswith(PREFIX):
            return api(environ, start_response)
        if other_app is not None:
            return other_app(environ, start_response)
        return serve(not_found, environ, start_response)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"[web] listen = {listen!r} must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def create_server(cfg, app=None, *, listen: str | None = None, threads: int = 4):
    """A waitress server bound to [web] listen (or `listen`; port 0 = any free port), not yet running."""
    import waitress.server

    host, port = parse_listen(listen or cfg.web.listen)
    app = app if app is not None else mount(PullAPI(cfg))
    return waitress.server.create_server(app, host=host, port=port, threads=threads,
                                         channel_timeout=30, ident="presensi")


def serve_pull_api(cfg, stop_event: threading.Event, *, app=None, listen: str | None = None,
                   on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until stop_event is set (the daemon calls this in a thread). `on_ready(port)` is called once
    listening. Returns at once, logging why, when [web] token is unset (the pull API is off). Raises
    PullAPIError when the address cannot be used."""
    if app is None and not cfg.web.token:
        log.info("pull API off: [web] token is not set")
        return
    address = listen or cfg.web.listen
    try:
        server = create_server(cfg, app, listen=address)
    except (OSError, ValueError) as e:
        raise PullAPIError(f"[web] listen = {address!r}: cannot listen there ({getattr(e, 'strerror', None) or e}); "
                           "is another program using the port, or is the address not on this machine?") from None
    runner = threading.Thread(target=server.run, name="pullapi-http", daemon=True)
    runner.start()
    log.info("pull API listening on http://%s:%s/api/v1/", address.rpartition(":")[0], server.effective_port)
    if on_ready is not None:
        on_ready(server.effective_port)
    try:
        stop_event.wait()
    finally:
        stop_server(server)
        runner.join(timeout=5)


def stop_server(server) -> None:
    """Close the listener and every open connection from inside waitress's own loop (closing sockets
    from another thread races its poll), then stop the worker threads."""
    def close_all():
        for channel in list(server._map.values()):
            channel.close()
    try:
        server.trigger.pull_trigger(close_all)
    except OSError:  # already closed
        pass
    server.task_dispatcher.shutdown(timeout=5)
