"""Benchmark: pyzk 0.9 (unmodified, from PyPI) downloads 100,000 punches from our ZK server over loopback,
TCP and UDP. Prints JSON. The issue's target: under 10 s for 100,000 records.

    python bench/zk_bench.py [--records 100000] [--employees 300]

`fill_log` writes the punches straight into a fresh punch log in one transaction (hash chain and all),
because 100,000 durable one-by-one appends would take minutes; the tests use it too.
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
sys.path.insert(0, str(REPO))

from terminal import config  # noqa: E402
from terminal.log import chain, punchlog  # noqa: E402
from terminal.timing import clock  # noqa: E402

KINDS = ("masuk", "pulang", "istirahat", "istirahat_kembali", "lembur_masuk", "lembur_pulang", "")
METHODS = ("face", "finger", "pin")
BASE_NS = 1_780_000_000 * 10**9  # 2026-05-28 UTC


def fill_log(state_dir: Path, n: int, employees: int = 300, step_s: int = 37) -> list[dict]:
    """Append n punches (employee NIP-like ids, all kinds and methods) in one transaction; returns nothing
    big: the expected (employee, realtime_ns, kind, method) are recomputed by `expected_punch`."""
    log = punchlog.PunchLog(state_dir)
    reading = clock.read()
    seq, prev = log.head()
    rows = []
    for i in range(n):
        emp, ns, kind, method = expected_punch(seq + i, employees, step_s)
        rec = {"log_id": log.log_id, "employee": emp, "method": method, "kind": kind, "details": "{}",
               **{**reading.as_dict(), "realtime_ns": ns}, "latitude": None, "longitude": None,
               "photo_path": None, "photo_sha256": None, "seq": seq + i + 1, "prev_hash": prev}
        rec["hash"] = prev = chain.record_hash(prev, rec)
        rows.append(rec)
    cols = list(rows[0]) if rows else []
    conn = log.conn
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO punches ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                     [tuple(r[c] for c in cols) for r in rows])
    conn.execute("COMMIT")
    log.close()
    return []


def expected_punch(index: int, employees: int = 300, step_s: int = 37) -> tuple[str, int, str, str]:
    emp = f"19800101200{index % employees:07d}"
    return emp, BASE_NS + index * step_s * 10**9, KINDS[index % len(KINDS)], METHODS[index % len(METHODS)]


def make_terminal(root: Path, n: int, employees: int, comm_key: int = 0) -> Path:
    state = root / "state"
    punchlog.init(state)
    fill_log(state, n, employees)
    cfg = root / "presensi.toml"
    cfg.write_text(f'[device]\nid = "bench-01"\n[paths]\nstate_dir = "{state}"\n'
                   f'[zk]\nlisten = "127.0.0.1:0"\ncomm_key = {comm_key}\n')
    return cfg


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def download(port: int, udp: bool) -> dict:
    from zk import ZK

    t0, c0 = time.perf_counter(), time.process_time()
    conn = ZK("127.0.0.1", port=port, ommit_ping=True, force_udp=udp, timeout=60).connect()
    records = conn.get_attendance()
    conn.disconnect()
    return {"seconds": time.perf_counter() - t0, "client_cpu_seconds": time.process_time() - c0,
            "records": len(records), "users": len({r.user_id for r in records})}


def server_encode_seconds(cfg_path: Path, n: int) -> dict:
    """Our side alone: encoding every record of a download (DB read, corrected time, 40-byte records)."""
    from sync.device.zk.data import TerminalView
    from sync.device.zk.session import ReadBuffer

    cfg = config.load(cfg_path)
    out = {}
    view = TerminalView(cfg, cfg.state_dir)
    for label in ("with_timeline", "raw_wall_clock"):
        buf = ReadBuffer(view, "attlog", 0, n)
        t0 = time.perf_counter()
        for start in range(0, buf.size, 0xFFC0):
            buf.read(start, min(0xFFC0, buf.size - start))
        out[label] = round(time.perf_counter() - t0, 3)
        view.timeline = None
    view.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--employees", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg_path = make_terminal(Path(tmp), args.records, args.employees)
        fill_s = time.perf_counter() - t0
        # the server in its own process, as on a terminal: client and server do not share a GIL
        server = subprocess.Popen([sys.executable, "-m", "sync.device.zk.server", "-c", str(cfg_path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        try:
            port = int(server.stdout.readline().rsplit(":", 1)[1])
            results = {}
            for name, udp in (("tcp", False), ("udp", True)):
                s0 = cpu_seconds(server.pid)
                r = download(port, udp)
                r["server_cpu_seconds"] = cpu_seconds(server.pid) - s0
                results[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                results[name]["under_10s"] = r["seconds"] < 10
        finally:
            server.terminate()
            server.wait(10)
        encode = server_encode_seconds(cfg_path, args.records)
    print(json.dumps({
        "benchmark": "pyzk 0.9 get_attendance over loopback, server in its own process",
        "records": args.records, "employees": args.employees, "fill_seconds": round(fill_s, 2),
        **results, "server_encode_seconds": encode,
        "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
        "note": "client_cpu includes pyzk's own O(n^2) bytes slicing while parsing 40-byte records; "
                "server_encode_seconds splits our cost into the timeline's corrected time and the rest",
    }, indent=2))


if __name__ == "__main__":
    main()
