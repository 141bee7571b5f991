"""Durable punches per second and the latency of one punch (p50/p99), on a real SQLite file.

Compares the log's append (WAL + synchronous=FULL, hash chain, writer queue) with what someone would pick
instead: a bare sqlite3 INSERT with the same durability (no chain, no queue), and the same with
synchronous=NORMAL (faster, but loses commits on power cut). Prints JSON.

    python bench/punch_bench.py [--punches 2000] [--dir /var/lib/presensi-bench]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terminal.log import punchlog  # noqa: E402


def percentiles(samples: list[float]) -> dict:
    qs = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(qs[49] * 1000, 3), "p99_ms": round(qs[98] * 1000, 3),
            "mean_ms": round(statistics.fmean(samples) * 1000, 3)}


def bench_punchlog(directory: Path, n: int) -> dict:
    state = directory / "state"
    punchlog.init(state)
    lat = []
    with punchlog.PunchLog(state) as log:
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            log.append(f"{i:018d}", "pin")
            lat.append(time.perf_counter() - t)
        total = time.perf_counter() - t0
    return {"name": "presensi PunchLog.append (WAL+FULL, chain, queue)", "punches": n,
            "punches_per_s": round(n / total, 1), **percentiles(lat)}


def bench_bare_sqlite(directory: Path, n: int, synchronous: str) -> dict:
    conn = sqlite3.connect(directory / f"bare-{synchronous}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE p (seq INTEGER PRIMARY KEY, employee TEXT, method TEXT, realtime_ns INTEGER)")
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO p (employee, method, realtime_ns) VALUES (?, 'pin', ?)",
                     (f"{i:018d}", time.time_ns()))
        conn.execute("COMMIT")
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    conn.close()
    return {"name": f"bare sqlite3 INSERT (WAL+{synchronous}, no chain)", "punches": n,
            "punches_per_s": round(n / total, 1), **percentiles(lat)}


def bench_cli(directory: Path, n: int) -> dict:
    state = directory / "cli-state"
    cfg = directory / "cli.toml"
    cfg.write_text(f'[device]\nid = "bench"\n[paths]\nstate_dir = "{state}"\n')
    subprocess.run([sys.executable, "-m", "terminal.cli", "-c", str(cfg), "init"], check=True, capture_output=True)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "terminal.cli", "-c", str(cfg), "punch", "--employee", str(i),
                        "--method", "pin"], check=True, capture_output=True)
        lat.append(time.perf_counter() - t)
    return {"name": "`presensi punch` command (process start to exit 0)", "punches": n,
            "punches_per_s": round(n / sum(lat), 1), **percentiles(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--punches", type=int, default=2000)
    ap.add_argument("--cli-punches", type=int, default=50)
    ap.add_argument("--dir", type=Path, help="directory on the file system to measure (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        d = Path(d)
        results = [
            bench_punchlog(d, args.punches),
            bench_bare_sqlite(d, args.punches, "FULL"),
            bench_bare_sqlite(d, args.punches, "NORMAL"),
            bench_cli(d, args.cli_punches),
        ]
    print(json.dumps({"benchmark": "punch", "filesystem_dir": str(args.dir or tempfile.gettempdir()),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
