"""Pull-API throughput: a central server draining a 100k-punch backlog page by page over loopback HTTP.

    python bench/pullapi_bench.py [--punches 100000] [--limits 100,1000,5000] [--dir /dev/shm]

The terminal's API runs in its own process (uvicorn, as the daemon serves it); this process is
the central server's client (requests, one keep-alive session). For comparison, the same records read
locally and encoded as JSON lines (what `presensi log export` does on the terminal itself, e.g. for a USB
export) is the upper bound of what any remote pull could reach. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from terminal import config  # noqa: E402
from terminal.log import punchlog  # noqa: E402

TOKEN = "bench-token"


def make_log(state: Path, n: int) -> float:
    punchlog.init(state)
    t0 = time.perf_counter()
    with punchlog.PunchLog(state, checkpoint_every=100) as plog:
        have = plog.head()[0]
        for i in range(have, n):
            plog.append(f"19800101200501{i % 300:04d}", ("face", "finger", "pin")[i % 3], kind="masuk",
                        details={"distance": 0.31, "margin": 0.12, "frames": 3})
    return time.perf_counter() - t0


def serve(state: str, port_q, annotate: bool) -> None:
    from sync.device import pullapi

    if not annotate:  # measure the API without the time engineer's derived-time annotation
        pullapi.timeline = None

    cfg = config.from_dict({"device": {"id": "bench"}, "paths": {"state_dir": state},
                            "web": {"token": TOKEN, "listen": "127.0.0.1:0", "rate_limit": 1e6}})
    pullapi.serve_pull_api(cfg, threading.Event(), on_ready=port_q.put)  # serves until terminated


def drain(url: str, limit: int) -> dict:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    after, n, pages, nbytes, lat = 0, 0, 0, 0, []
    t0 = time.perf_counter()
    while True:
        t = time.perf_counter()
        r = session.get(f"{url}/api/v1/punches", params={"after_seq": after, "limit": limit}, timeout=60)
        r.raise_for_status()
        body = r.json()
        lat.append(time.perf_counter() - t)
        nbytes += len(r.content)
        n += len(body["records"])
        pages += 1
        after = body["cursor"]["after_seq"]
        if not body["more"]:
            break
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {"limit": limit, "records": n, "pages": pages, "seconds": round(elapsed, 3),
            "punches_per_s": round(n / elapsed), "mb_per_s": round(nbytes / elapsed / 1e6, 2),
            "page_ms_p50": round(statistics.median(lat) * 1000, 2),
            "page_ms_p95": round(lat[int(0.95 * (len(lat) - 1))] * 1000, 2)}


def pull_runs(state: Path, limits: list[int], annotate: bool) -> list[dict]:
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    server = ctx.Process(target=serve, args=(str(state), port_q, annotate), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{port_q.get(timeout=30)}"
        return [drain(url, limit) for limit in limits]
    finally:
        server.terminate()
        server.join(10)


def local_export(state: Path) -> dict:
    t0 = time.perf_counter()
    n = size = 0
    with punchlog.PunchLog(state) as plog:
        for rec in plog.records():
            size += len(json.dumps(rec, ensure_ascii=False)) + 1
            n += 1
    elapsed = time.perf_counter() - t0
    return {"records": n, "seconds": round(elapsed, 3), "punches_per_s": round(n / elapsed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--punches", type=int, default=100_000)
    ap.add_argument("--limits", default="100,1000,5000")
    ap.add_argument("--annotate", choices=["on", "off", "both"], default="both",
                    help="derived time fields via terminal.timing.timeline.annotate (on), without (off), or both")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where to build the punch log (tmpfs keeps set-up fast; the reads are what is measured)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        state = Path(tmp) / "state"
        setup_s = make_log(state, args.punches)
        runs = []
        for annotate in {"on": [True], "off": [False], "both": [True, False]}[args.annotate]:
            for run in pull_runs(state, [int(x) for x in args.limits.split(",")], annotate):
                runs.append({"annotate": annotate, **run})
        baseline = local_export(state)
    print(json.dumps({"bench": "pullapi", "punches": args.punches, "cpus": os.cpu_count(),
                      "setup_seconds": round(setup_s, 1), "pull_api": runs,
                      "local_jsonl_export_baseline": baseline}, indent=2))


if __name__ == "__main__":
    main()
