"""How fast a decision reaches the kiosk screen: a real Daemon (no camera) records operator PIN punches and
the kiosk's Server-Sent Events stream (/events, over real HTTP through uvicorn) delivers each decision.
Measured from just before `PunchService.punch` (so it includes the durable commit) to the event's arrival.
The alternative a kiosk author would pick instead is polling a state URL; its expected delay is half the
poll interval plus one request, which is measured too (GET /kiosk/state). Prints JSON.

    python bench/kiosk_bench.py [--punches 50] [--poll-interval 1.0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from terminal import config  # noqa: E402
from terminal.app.daemon import Daemon  # noqa: E402
from terminal.log import punchlog  # noqa: E402


def start_daemon(state: Path) -> Daemon:
    punchlog.init(state)
    cfg = config.from_dict({"device": {"id": "bench-01"}, "paths": {"state_dir": str(state)},
                            "web": {"listen": "127.0.0.1:0"}, "camera": {"enabled": False}})
    daemon = Daemon(cfg)
    threading.Thread(target=daemon.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not daemon.web_port and time.monotonic() < deadline:
        time.sleep(0.02)
    if not daemon.web_port:
        raise SystemExit("the daemon's web server did not start")
    return daemon


def sse_latencies(daemon: Daemon, punches: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.web_port, timeout=10)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    buf = b""
    while b"event: status" not in buf:
        buf += resp.read1(65536)
    out = []
    for i in range(punches):
        employee = f"1990{i:06d}"
        start = time.perf_counter()
        daemon.punches.punch(employee, "pin", details={"operator": "bench"})
        buf = b""
        while employee.encode() not in buf:
            buf += resp.read1(65536)
        out.append((time.perf_counter() - start) * 1000)
    conn.close()
    return out


def state_request_ms(daemon: Daemon, n: int = 20) -> list[float]:
    out = []
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", daemon.web_port, timeout=10)
        start = time.perf_counter()
        conn.request("GET", "/kiosk/state")
        conn.getresponse().read()
        out.append((time.perf_counter() - start) * 1000)
        conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--punches", type=int, default=50)
    ap.add_argument("--poll-interval", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = start_daemon(Path(tmp) / "state")
        try:
            sse = sorted(sse_latencies(daemon, args.punches))
            poll_req = statistics.median(state_request_ms(daemon))
        finally:
            daemon.stop_event.set()
    print(json.dumps({
        "punches": args.punches,
        "sse_ms": {"p50": round(statistics.median(sse), 2), "p95": round(sse[int(0.95 * (len(sse) - 1))], 2),
                   "max": round(sse[-1], 2)},
        "target_ms": 200,
        "polling_alternative_ms": {"interval_s": args.poll_interval,
                                   "expected": round(args.poll_interval * 500 + poll_req, 2),
                                   "worst": round(args.poll_interval * 1000 + poll_req, 2),
                                   "one_request": round(poll_req, 2)},
    }, indent=1))


if __name__ == "__main__":
    main()
