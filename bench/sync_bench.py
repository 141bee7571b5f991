"""Backlog drain rate and peak memory of the push client (sync/device/push.py) against the reference central server
(`presensi server run`, SQLite, synchronous=FULL) over loopback, for 10k, 100k and optionally 1M punches.

Each size gets a fresh terminal log (written fast by tests/synthlog.py, not timed) and a fresh server. The
pusher runs in its own process so its peak RSS (ru_maxrss from wait4) is its own; the server's is measured
the same way. On a shared machine wall-clock rates depend on the load, so CPU seconds of each side are
reported too, with `rate_if_one_core_each` = punches / max(client CPU, server CPU) (both sides pipeline).

The comparison a user might pick instead: the same client with a huge batch (`--compare-batch`, default
10000, the largest [central] batch_size allows), which shows what bounded batches buy in memory.

    python bench/sync_bench.py                 # 10k and 100k
    python bench/sync_bench.py --with-1m       # also 1,000,000 (several minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import synthlog  # noqa: E402

from terminal.log import punchlog  # noqa: E402

PUSHER = """
import json, sys, time
from terminal import config
from sync.device import push
cfg = config.load(sys.argv[1])
p = push.Pusher(cfg.state_dir, push.Settings.from_config(cfg))
t = time.perf_counter()
result = p.drain(time.monotonic() + 3600)
print(json.dumps({"seconds": time.perf_counter() - t, **result}))
"""


def _wait_rusage(proc: subprocess.Popen) -> dict:
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def run_size(n: int, batch_size: int, tmp: Path) -> dict:
    state, db = tmp / "state", tmp / "central.db"
    punchlog.init(state)
    t = time.perf_counter()
    synthlog.fill(state, n)
    fill_s = time.perf_counter() - t
    cli = [sys.executable, "-m", "terminal.cli"]
    reg = json.loads(subprocess.run([*cli, "server", "add-device", "bench-01", "--db", str(db), "--json"],
                                    capture_output=True, text=True, check=True, cwd=REPO, timeout=120).stdout)
    server = subprocess.Popen([*cli, "server", "run", "--db", str(db), "--listen", "127.0.0.1:0"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[-1]
        cfg = tmp / "bench.toml"
        cfg.write_text(f'[device]\nid = "bench-01"\n[paths]\nstate_dir = "{state}"\n[central]\nurl = "{url}"\n'
                       f'token = "{reg["token"]}"\nenrolment_code = "{reg["enrolment_code"]}"\n'
                       f'batch_size = {batch_size}\ntimeout = 60.0\n')
        pusher = subprocess.Popen([sys.executable, "-c", PUSHER, str(cfg)], cwd=REPO, stdout=subprocess.PIPE,
                                  text=True)
        out = pusher.stdout.read()
        client = _wait_rusage(pusher)
        result = json.loads(out)
    finally:
        server.terminate()
        server_usage = _wait_rusage(server)
    from sync.server.storage import open_store

    stored = open_store(str(db)).punch_count("bench-01")
    return {
        "punches": n, "batch_size": batch_size, "delivered": stored, "all_acknowledged": result["done"],
        "drain_seconds": round(result["seconds"], 2),
        "punches_per_second": round(n / result["seconds"]),
        "rate_if_one_core_each": round(n / max(client["cpu_s"], server_usage["cpu_s"], 1e-9)),
        "client": client, "server": server_usage, "log_fill_seconds": round(fill_s, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated backlog sizes")
    ap.add_argument("--with-1m", action="store_true", help="also drain 1,000,000 punches")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--compare-batch", type=int, default=10000,
                    help="also run each size with this batch size (0 = skip)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([1_000_000] if args.with_1m else [])
    runs = []
    for n in sizes:
        for batch in [args.batch_size] + ([args.compare_batch] if args.compare_batch else []):
            with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
                runs.append(run_size(n, batch, Path(tmp)))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "sync backlog drain over loopback", "load_average": os.getloadavg(),
                      "cpus": os.cpu_count(), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
