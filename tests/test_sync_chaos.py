"""The issue's delivery guarantee under faults: a backlog goes through a proxy that fails ~30 % of requests
(HTTP 500, connection resets, a stalling server, a response lost after the server stored the batch), while
the pushing process (`presensi sync now`) and the server (`presensi server run`) are each killed with
SIGKILL several times. The server must end with exactly every record, none duplicated, chain verified.

Sized at 20,000 punches so it runs in well under two minutes on two shared cores; bench/sync_bench.py
drains 100,000 and 1,000,000 (without faults) for the rate and memory numbers."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter

import synthlog
from synctools import REPO, ServerProcess, free_port, make_terminal, presensi

from sync.server.storage import open_store
from terminal.log import chain

# 20,000 keeps CI fast; the 100,000: PRESENSI_CHAOS_PUNCHES=100000 pytest tests/test_sync_chaos.py
N_PUNCHES = int(os.environ.get("PRESENSI_CHAOS_PUNCHES", "20000"))
FAULTS = ("http-500", "reset", "stall", "lost-response", "server-error-after-store")


class FaultyProxy(socketserver.ThreadingTCPServer):
    """HTTP proxy (one request per connection) in front of the server that injects faults."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream_port: int, fail_rate: float = 0.3, stall_s: float = 2.5, seed: int = 7):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port, self.fail_rate, self.stall_s = upstream_port, fail_rate, stall_s
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()
        self.lock = threading.Lock()

    def choose(self) -> str:
        with self.lock:
            fault = self.rng.choice(FAULTS) if self.rng.random() < self.fail_rate else "pass"
            self.counts[fault] += 1
            return fault


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        sock.settimeout(10)
        try:
            raw = _read_request(sock)
        except (OSError, ValueError):
            return
        fault = self.server.choose()
        if fault == "http-500":
            body = b'{"error": "injected failure"}'
            sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif fault == "reset":
            _reset(sock)
        elif fault == "stall":
            time.sleep(self.server.stall_s)  # longer than the client's read timeout
        else:
            try:
                response = _forward(self.server.upstream_port, raw)
            except OSError:
                response = (b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                fault = "upstream-down"
            if fault == "lost-response":
                _reset(sock)  # the server stored the batch, the answer never arrives
            elif fault == "server-error-after-store":
                sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nConnection: close\r\n"
                             b"Content-Length: 0\r\n\r\n")
            else:
                sock.sendall(response)


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


def _forward(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as up:
        up.sendall(raw)
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


def _start_pusher(cfg_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "terminal.cli", "-c", str(cfg_path), "sync", "now",
                             "--timeout", "60"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_backlog_survives_faults_and_sigkills(tmp_path):
    server_port = free_port()
    server = ServerProcess(str(tmp_path / "central.db"), server_port)
    server.start()
    reg = json.loads(presensi("server", "add-device", "dev-01", "--db", tmp_path / "central.db", "--json").stdout)
    proxy = FaultyProxy(server_port)
    threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    cfg_path, cfg = make_terminal(tmp_path, url, reg, timeout=1.0, batch_size=250,
                                  retry_base=0.05, max_backoff=0.4, heartbeat_interval=0.3)
    head_seq, head_hash = synthlog.fill(cfg.state_dir, N_PUNCHES)
    rng = random.Random(11)
    pusher_kills = server_kills = runs = 0
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline:
            runs += 1
            proc = _start_pusher(cfg_path)
            if pusher_kills < 4:
                time.sleep(rng.uniform(1.5, 3.0))
                if server_kills < 3:
                    server.kill()  # dies mid-batch or between batches; restarted at once on the same port
                    server_kills += 1
                    server.start()
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    pusher_kills += 1
                    continue
            out, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            if proc.returncode == 0:
                break
            assert "Nothing is lost" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
        proxy.shutdown()
        proxy.server_close()

    print(f"proxy: {dict(proxy.counts)}; pusher SIGKILLs {pusher_kills}, server SIGKILLs {server_kills}, "
          f"pusher runs {runs}")
    assert proc.returncode == 0, err
    assert pusher_kills >= 3 and server_kills >= 3, (pusher_kills, server_kills)
    failed = sum(proxy.counts[f] for f in FAULTS)
    assert failed / sum(proxy.counts.values()) > 0.15, proxy.counts
    assert all(proxy.counts[f] > 0 for f in FAULTS), proxy.counts

    store = open_store(str(tmp_path / "central.db"))
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
