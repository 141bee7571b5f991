"""The issue's delivery guarantee under faults: a backlog goes through a proxy that fails ~30 % of requests
(HTTP 500, connection resets, a stalling server, a response lost after the server stored the batch), while
the pushing process (`presensi sync now`) and the server (`presensi server run`) are killed with SIGKILL at
the moments that matter: with a batch on its way to the server, with the server holding a batch it may or
may not have committed, and both together. The server must end with exactly every record, none duplicated,
chain verified.

The kills do not depend on how fast the machine is: each one waits for a point in the backlog (a fraction
of it stored on the server), the proxy then holds the next batch there (before or after the server saw it)
and the test kills while it is held. Progress is frozen at that point, so a busy machine only makes the
test slower, and a fast one cannot finish before the kill lands.

Sized at 20,000 punches so it runs in well under two minutes on two shared cores; bench/sync_bench.py
drains 100,000 and 1,000,000 (without faults) for the rate and memory numbers."""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing

import synthlog
from synctools import REPO, ServerProcess, free_port, make_terminal, presensi

from sync.server.storage import open_store
from terminal.log import chain

# 20,000 keeps CI fast; the 100,000: PRESENSI_CHAOS_PUNCHES=100000 pytest tests/test_sync_chaos.py
N_PUNCHES = int(os.environ.get("PRESENSI_CHAOS_PUNCHES", "20000"))
FAULTS = ("http-500", "reset", "stall", "lost-response", "server-error-after-store")
# Which fault each request meets, in turn: 5 of every 16 (31 %), each kind in every cycle, so the mix does
# not depend on how many requests (heartbeats, retries) a busy or fast machine happens to make.
PATTERN = ("pass", "http-500", "pass", "pass", "reset", "pass", "pass", "stall", "pass", "pass",
           "lost-response", "pass", "pass", "server-error-after-store", "pass", "pass")
FORWARDED = ("pass", "lost-response", "server-error-after-store")  # these reach the server
PUNCH_POST = b"POST /api/v1/devices/dev-01/punches "
# The kills: at this fraction of the backlog stored on the server, hold the next batch (before the server
# sees it, or with the server holding it) and SIGKILL these processes while it is held.
PLAN = (
    (0.05, "before", ("pusher",)),
    (0.15, "after", ("server",)),  # the server dies with a batch it may or may not have committed
    (0.30, "after", ("pusher",)),  # the pusher dies after sending, before any answer
    (0.45, "before", ("server",)),  # the server is gone when the batch arrives
    (0.60, "after", ("pusher", "server")),
    (0.80, "before", ("pusher",)),
    (0.90, "after", ("server",)),
)
WAIT = 120  # seconds for any one step on two loaded cores; a step that takes longer is a failure


def stored_count(db) -> int:
    """How many punches the server has committed (its SQLite file, read-only, as another reader would)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute("SELECT count(*) FROM punches").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or busy for longer than the timeout
        return 0


class Hold:
    """One kill point: the first punch batch forwarded once `threshold` punches are stored is held
    ("before" it reaches the server or "after" the server got it, its answer not yet read), and so is every
    later batch, until the test releases them."""

    def __init__(self, threshold: int, mode: str):
        self.threshold, self.mode = threshold, mode
        self.held = threading.Event()  # a batch is held: the kill may land
        self.released = threading.Event()


class FaultyProxy(socketserver.ThreadingTCPServer):
    """HTTP proxy (one request per connection) in front of the server that injects faults."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream_port: int, db, stall_s: float = 2.5):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port, self.db, self.stall_s = upstream_port, db, stall_s
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        self.n = 0
        self.hold: Hold | None = None

    def choose(self) -> str:
        with self.lock:
            fault = PATTERN[self.n % len(PATTERN)]
            self.n += 1
            self.counts[fault] += 1
            return fault

    def hold_for(self, raw: bytes) -> Hold | None:
        """The armed kill point if this request is a punch batch it must hold."""
        hold = self.hold
        if hold is None or not raw.startswith(PUNCH_POST):
            return None
        if not hold.held.is_set() and stored_count(self.db) < hold.threshold:
            return None
        hold.held.set()
        return hold


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        sock.settimeout(10)
        try:
            raw = _read_request(sock)
        except (OSError, ValueError):
            return
        fault = self.server.choose()
        hold = self.server.hold_for(raw) if fault in FORWARDED else None
        if fault == "http-500":
            body = b'{"error": "injected failure"}'
            sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif fault == "reset":
            _reset(sock)
        elif fault == "stall":
            time.sleep(self.server.stall_s)  # the fault itself: longer than the client's read timeout
        else:
            try:
                response = _forward(self.server.upstream_port, raw, hold)
            except OSError:
                response = (b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                fault = "upstream-down"
            try:
                if fault == "lost-response":
                    _reset(sock)  # the server stored the batch, the answer never arrives
                elif fault == "server-error-after-store":
                    sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nConnection: close\r\n"
                                 b"Content-Length: 0\r\n\r\n")
                else:
                    sock.sendall(response)
            except OSError:
                pass  # the pusher was killed or gave up on this request while it was held


def _read_request(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("closed")
        body += chunk
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body


def _forward(port: int, raw: bytes, hold: Hold | None = None) -> bytes:
    if hold and hold.mode == "before":
        hold.released.wait(WAIT)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as up:
        up.sendall(raw)
        if hold and hold.mode == "after":
            hold.released.wait(WAIT)
        chunks = []
        while True:
            chunk = up.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    if not response:
        raise OSError("empty response")
    return response


def _reset(sock: socket.socket) -> None:
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class PusherRuns:
    """`presensi sync now` kept running (restarted when it is killed or gives up) until one run delivers
    everything. Its output goes to files: a pipe nobody reads could fill and stall it."""

    def __init__(self, cfg_path, tmp_path):
        self.cfg_path, self.tmp, self.runs, self.proc, self.done = cfg_path, tmp_path, 0, None, False

    def _start(self) -> None:
        self.runs += 1
        self.err_path = self.tmp / f"pusher-{self.runs}.err"
        with open(self.tmp / f"pusher-{self.runs}.out", "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "-c", str(self.cfg_path), "sync",
                                          "now", "--timeout", "60"], cwd=REPO, stdout=out, stderr=err)

    def keep_running(self) -> None:
        if self.done:
            return
        if self.proc is None:
            return self._start()
        code = self.proc.poll()
        if code is None:
            return
        if code == 0:
            self.done = True
            return
        if code != -signal.SIGKILL:  # killed by the test: no message to check
            err = self.err_path.read_text()
            assert "Nothing is lost" in err, err
        self._start()

    def kill(self) -> None:
        assert self.proc.poll() is None, "the pusher ended before its kill point"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(condition, what: str, pusher: PusherRuns, timeout: float = WAIT) -> None:
    """Wait until condition() holds, keeping a pusher running meanwhile; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        pusher.keep_running()
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.02)  # polling interval


def test_backlog_survives_faults_and_sigkills(tmp_path):
    db = tmp_path / "central.db"
    server_port = free_port()
    server = ServerProcess(str(db), server_port)
    server.start()
    reg = json.loads(presensi("server", "add-device", "dev-01", "--db", db, "--json").stdout)
    proxy = FaultyProxy(server_port, db)
    threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    cfg_path, cfg = make_terminal(tmp_path, url, reg, timeout=1.0, batch_size=250,
                                  retry_base=0.05, max_backoff=0.4, heartbeat_interval=0.3)
    head_seq, head_hash = synthlog.fill(cfg.state_dir, N_PUNCHES)
    pusher = PusherRuns(cfg_path, tmp_path)
    kills = Counter()
    try:
        for fraction, mode, victims in PLAN:
            hold = proxy.hold = Hold(int(fraction * N_PUNCHES), mode)
            wait_for(hold.held.is_set, f"a batch held {mode} the server at {fraction:.0%} stored", pusher)
            for victim in victims:
                if victim == "pusher":
                    pusher.kill()
                else:
                    server.kill()
                kills[victim] += 1
            proxy.hold = None
            hold.released.set()
            if "server" in victims:
                server.start()  # restarted on the same port, as systemd would
        wait_for(lambda: pusher.done, "a pusher run that delivers everything", pusher)
    finally:
        pusher.stop()
        server.stop()
        proxy.shutdown()
        proxy.server_close()

    print(f"proxy: {dict(proxy.counts)}; SIGKILLs {dict(kills)}, pusher runs {pusher.runs}")
    assert kills == {"pusher": 4, "server": 4}  # every kill point was reached while work was pending
    failed = sum(proxy.counts[f] for f in FAULTS)
    assert failed / sum(proxy.counts.values()) > 0.15, proxy.counts
    assert all(proxy.counts[f] > 0 for f in FAULTS), proxy.counts

    store = open_store(str(db))
    stored = list(store.iter_punches("dev-01"))
    assert len(stored) == N_PUNCHES
    assert [p["seq"] for p in stored] == list(range(1, N_PUNCHES + 1))  # each once, none missing
    log_id = stored[0]["log_id"]
    problems = list(chain.check_records(({**p, "details": json.loads(p["details"])} for p in stored), log_id))
    assert problems == []
    assert stored[-1]["hash"] == head_hash
    assert store.alarms() == []
    assert store.acked_through("dev-01", log_id) == head_seq
    status = json.loads(presensi("-c", cfg_path, "sync", "status", "--json").stdout)
    assert status["backlog"] == 0 and status["acked_seq"] == N_PUNCHES
