"""sync/device/central.py against real HTTP on 127.0.0.1: a small `http.server` in a thread whose answers
each test scripts (so these tests do not depend on the reference server's framework), and a listening
socket that never answers. What is checked is what a user of push, time and roster sees: the back-off
stays within full jitter and honours Retry-After, a refused token says what to configure, a dead server
hits the timeout, and a huge reply is cut off with memory bounded by the limit."""

from __future__ import annotations

import email.utils
import gzip
import json
import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import synthlog
from synctools import make_terminal

from sync.device import central, push, roster_client
from sync.wire.rosterbundle import BundleRejected
from terminal import config
from terminal.log import punchlog
from terminal.punch import roster

MB = 1024 * 1024


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes
    port: int
    at: float


@dataclass
class Answer:
    status: int = 200
    headers: dict | None = None
    chunks: Iterable[bytes] = ()

    @classmethod
    def json(cls, obj, status: int = 200, headers: dict | None = None) -> Answer:
        raw = json.dumps(obj).encode()
        return cls(status, {"Content-Type": "application/json", "Content-Length": str(len(raw)), **(headers or {})},
                   [raw])


class Scripted:
    """HTTP/1.1 (keep-alive) on 127.0.0.1; `answer(Seen) -> Answer` decides every reply. Counts the body
    bytes it managed to hand to the kernel, so a test can tell a dropped connection from a drained one."""

    def __init__(self, answer: Callable[[Seen], Answer]):
        self.answer, self.seen, self.sent = answer, [], 0
        self.handled = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self._handle()

            do_POST = do_PUT = do_GET

            def _handle(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                seen = Seen(self.command, self.path, dict(self.headers), body, self.client_address[1],
                            time.monotonic())
                outer.seen.append(seen)
                answer = outer.answer(seen)
                self.send_response(answer.status)
                for k, v in (answer.headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    for chunk in answer.chunks:
                        self.wfile.write(chunk)
                        outer.sent += len(chunk)
                except OSError:  # the client hung up: that is what a cut-off looks like from here
                    self.close_connection = True
                finally:
                    outer.handled.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def client(url: str, token: str = "tok", timeout: float = 5.0) -> central.Client:
    return central.Client(central.Settings(url=url, device_id="dev-01", token=token, timeout=timeout,
                                           retry_base=0.01, max_backoff=0.05))


def endless(total: int, chunk: int = 64 * 1024) -> Iterable[bytes]:
    block = b"x" * chunk
    for _ in range(total // chunk):
        yield block


# -- the back-off policy -----------------------------------------------------------------------------------


def test_backoff_is_full_jitter_within_bounds_and_never_sooner_than_retry_after():
    rng = random.Random(13)
    base, cap = 0.5, 60.0
    for failures in range(1, 14):
        ceiling = min(cap, base * 2 ** failures)
        draws = [central.backoff_delay(failures, base, cap, rng=rng) for _ in range(400)]
        assert 0 <= min(draws) and max(draws) <= ceiling
        # spread over the whole of [0, ceiling] (full jitter, not "equal jitter" or a fixed delay)
        assert min(draws) < 0.1 * ceiling and max(draws) > 0.9 * ceiling
    backoff = central.Backoff(base, cap, rng)
    sequence = [backoff.failed() for _ in range(10)]
    assert all(0 <= d <= min(cap, base * 2 ** n) for n, d in enumerate(sequence, start=1))
    backoff.succeeded()
    assert backoff.failed() <= 2 * base  # a success starts the sequence again
    with_server_wish = [central.Backoff(base, cap, rng).failed(retry_after=5.0) for _ in range(200)]
    assert min(with_server_wish) == 5.0  # never sooner than Retry-After, even where jitter says 0.3 s
    assert central.Backoff(1.0, 0.5, rng).failed(retry_after=30.0) == 30.0  # ... and even above the cap


def test_retry_after_in_seconds_and_as_an_http_date():
    now = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
    assert central.parse_retry_after("7") == 7.0
    assert central.parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert central.parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert central.parse_retry_after("soon") is None and central.parse_retry_after(None) is None


def test_push_waits_for_a_retry_after_given_as_an_http_date(tmp_path):
    """429 with Retry-After as an HTTP date two seconds ahead: the pusher's next try comes no sooner,
    although its own back-off (retry_base 0.01 s) would have retried almost at once."""

    def answer(req: Seen) -> Answer:
        if len(seen) == 1:
            return Answer.json({"error": "busy"}, 429,
                               {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)})
        return Answer.json({"acked_through": json.loads(req.body)["records"][-1]["seq"]})

    with Scripted(answer) as srv:
        seen = srv.seen
        _, cfg = make_terminal(tmp_path, srv.url, "tok", retry_base=0.01, max_backoff=0.05)
        synthlog.fill(cfg.state_dir, 5)
        slept = []
        pusher = push.Pusher(cfg.state_dir, push.Settings.from_config(cfg),
                             sleep=lambda s: (slept.append(s), time.sleep(s)))
        try:
            assert pusher.drain(time.monotonic() + 30)["done"]
        finally:
            pusher.close()
    assert len(seen) == 2 and seen[0].headers["Content-Encoding"] == "gzip"
    # an HTTP date has whole seconds: "now + 2 s" is 1–2 s ahead when it is read
    assert 0.9 <= slept[0] <= 2.5 and seen[1].at - seen[0].at >= 0.9


def test_transient_answers_carry_retry_after(tmp_path):
    answers = iter([Answer.json({"error": "maintenance"}, 503, {"Retry-After": "3"}),
                    Answer.json({"error": "slow down"}, 429), Answer.json({"error": "gateway"}, 502)])
    with Scripted(lambda req: next(answers)) as srv, client(srv.url) as c:
        with pytest.raises(central.TransientError, match="HTTP 503 .*maintenance") as first:
            c.request("GET", "/api/v1/x")
        assert first.value.retry_after == 3.0 and first.value.status == 503
        for status in (429, 502):
            with pytest.raises(central.TransientError, match=f"HTTP {status}") as e:
                c.request("GET", "/api/v1/x")
            assert e.value.retry_after is None


# -- classification of refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_a_configuration_error_naming_what_to_fix(tmp_path, status):
    with Scripted(lambda req: Answer.json({"error": "unknown device token"}, status)) as srv:
        with client(srv.url, token="wrong") as c, pytest.raises(central.AuthError) as e:
            c.request("POST", "/api/v1/time", json_body={})
        message = str(e.value)
        assert f"HTTP {status}: unknown device token" in message
        assert "[central] token" in message and "presensi server add-device dev-01" in message
        assert not isinstance(e.value, central.TransientError)
        # push gives up on it (a person must act) instead of retrying until its deadline
        _, cfg = make_terminal(tmp_path, srv.url, "wrong")
        synthlog.fill(cfg.state_dir, 2)
        pusher = push.Pusher(cfg.state_dir, push.Settings.from_config(cfg))
        started = time.monotonic()
        try:
            with pytest.raises(push.PushError, match="refused the device token"):
                pusher.drain(time.monotonic() + 30)
        finally:
            pusher.close()
        assert time.monotonic() - started < 10


def test_other_refusals_carry_the_servers_error_text():
    with Scripted(lambda req: Answer.json({"error": "records[3].seq must be an integer"}, 422)) as srv:
        with client(srv.url) as c, pytest.raises(central.RefusedError) as e:
            c.post_json(c.device_path("/punches"), {"records": []}, compress=True)
    assert e.value.status == 422 and "records[3].seq must be an integer" in str(e.value)
    assert not isinstance(e.value, central.TransientError)


def test_one_keep_alive_session_with_token_user_agent_and_gzip_json():
    with Scripted(lambda req: Answer.json({"ok": True})) as srv, client(srv.url) as c:
        for _ in range(3):
            assert c.post_json(c.device_path("/heartbeat"), {"backlog": 7, "name": "Kantor Camat"},
                               compress=True) == {"ok": True}
    assert len({s.port for s in srv.seen}) == 1, "all requests on one keep-alive connection"
    first = srv.seen[0]
    assert first.path == "/api/v1/devices/dev-01/heartbeat" and first.headers["Authorization"] == "Bearer tok"
    assert first.headers["User-Agent"].startswith("presensi-edge/")
    assert first.headers["Content-Encoding"] == "gzip" and json.loads(first.body)["name"] == "Kantor Camat"


def test_a_garbled_200_is_transient():
    html = b"<html>proxy error page</html>"
    with Scripted(lambda req: Answer(200, {"Content-Length": str(len(html))}, [html])) as srv, client(srv.url) as c:
        with pytest.raises(central.TransientError, match="not JSON"):
            c.post_json("/api/v1/time", {})


# -- timeouts ------------------------------------------------------------------------------------------------


@pytest.fixture
def silent_server():
    """A socket that listens and never answers: the kernel completes the connection, nothing else happens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_a_server_that_never_answers_hits_the_timeout(silent_server):
    started = time.monotonic()
    with client(silent_server, timeout=0.5) as c, pytest.raises(central.TransientError) as e:
        c.post_json("/api/v1/time", {"nonce": "x"})
    elapsed = time.monotonic() - started
    assert "did not answer within 0.5 s" in str(e.value) and "[central] url" in str(e.value)
    assert 0.4 <= elapsed < 5


def test_a_reply_that_stalls_mid_body_hits_the_timeout():
    def stall(req: Seen) -> Answer:
        def chunks():
            yield b'{"acked_through": '
            time.sleep(3)  # the server's side of the scenario: it stops sending, then would go on
            yield b"1}"
        return Answer(200, {"Content-Type": "application/json", "Content-Length": "20"}, chunks())

    started = time.monotonic()
    with Scripted(stall) as srv, client(srv.url, timeout=0.5) as c:
        with pytest.raises(central.TransientError, match="did not answer within 0.5 s"):
            c.post_json("/api/v1/devices/dev-01/punches", {})
        assert time.monotonic() - started < 2.5


# -- body limits -----------------------------------------------------------------------------------------------


def test_a_40_mb_reply_is_cut_off_at_the_limit_with_bounded_memory():
    total = 40 * MB
    with Scripted(lambda req: Answer(200, {"Connection": "close"}, endless(total))) as srv, client(srv.url) as c:
        tracemalloc.start()
        try:
            with pytest.raises(central.BodyTooLarge, match="over the limit of 1048576 bytes") as e:
                c.request("GET", "/api/v1/devices/dev-01/roster", limit=MB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert srv.handled.wait(20), "the server never noticed the client hung up"
    assert MB < e.value.received <= MB + central.CHUNK  # read at most the limit plus one chunk
    assert peak < 4 * MB, f"peak Python memory {peak / MB:.1f} MB for a 1 MB limit"
    assert srv.sent < total / 2, "the client drained the reply instead of dropping the connection"


def test_a_declared_oversized_reply_is_refused_before_reading():
    with Scripted(lambda req: Answer(200, {"Content-Length": str(40 * MB)}, endless(40 * MB))) as srv:
        with client(srv.url) as c, pytest.raises(central.BodyTooLarge, match=f"is {40 * MB} bytes") as e:
            c.request("GET", "/api/v1/devices/dev-01/roster", limit=MB)
    assert e.value.received == 0 and e.value.declared == 40 * MB


def test_a_huge_error_page_is_read_only_for_its_message():
    with Scripted(lambda req: Answer(500, {"Connection": "close"}, endless(40 * MB))) as srv, client(srv.url) as c:
        with pytest.raises(central.TransientError, match="HTTP 500") as e:
            c.request("GET", "/api/v1/x")
        assert len(e.value.reply.body) == central.ERROR_TEXT_LIMIT
        assert srv.handled.wait(20)
    assert srv.sent < 20 * MB


def test_the_roster_refuses_an_oversized_bundle_before_reading_it_whole(tmp_path):
    state = tmp_path / "state"
    punchlog.init(state)
    with Scripted(lambda req: Answer(200, {"Connection": "close"}, endless(40 * MB))) as srv:
        cfg = config.from_dict({"device": {"id": "opd-01"}, "paths": {"state_dir": str(state)},
                                "central": {"url": srv.url, "token": "tok", "timeout": 5.0},
                                "roster": {"max_bundle_bytes": MB}})
        with pytest.raises(BundleRejected) as e:
            roster_client.pull_roster(cfg)
        assert srv.handled.wait(20)
    assert e.value.code == "oversized" and "over the limit of 1048576 bytes" in e.value.reason
    assert srv.sent < 20 * MB
    assert roster.current_version(state) == 0
    with punchlog.PunchLog(state) as plog:
        last = plog.audit_entries(1)[0]
    assert last["action"] == "roster.rejected" and last["details"]["code"] == "oversized"
