"""How fast terminal.timing.timeline.annotate runs in the push client's batches (it is called for every record the
push client, the pull API and the ZK server send), and how long one re-anchoring (record_sample) takes.

Run: python bench/time_annotate.py [--punches N] — prints JSON. The punches are inserted directly (the hash
chain plays no part in annotate); boots, samples and drift are synthetic but realistic: a sample every hour.
Compare: records/s against the push client's target of 5,000 punches/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terminal.log import punchlog  # noqa: E402
from terminal.timing import timeline  # noqa: E402
from terminal.timing.clock import TIME_ERROR, ClockReading  # noqa: E402

S = 1_000_000_000
T0 = 1_795_000_000 * S


def fill(conn, n: int, boots: int) -> None:
    per_boot = n // boots
    rows = []
    for i in range(n):
        b, k = divmod(i, per_boot)
        m = (k + 1) * 30 * S  # a punch every 30 s of raw clock
        rows.append((i + 1, "log", f"emp{i % 500}", "pin", "", "{}", f"boot-{min(b, boots - 1)}", m, m,
                     T0 + b * 10 * 86400 * S + m, TIME_ERROR, None, "0" * 64, "0" * 64))
    conn.execute("BEGIN")
    conn.executemany("""INSERT INTO punches (seq, log_id, employee, method, kind, details, boot_id, monoraw_ns,
                        boottime_ns, realtime_ns, timex_status, maxerror_us, prev_hash, hash)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", rows)
    conn.execute("COMMIT")


def sample_boot(conn, boot: int, hours: int) -> float:
    """One sample per hour of the boot; returns the seconds the last record_sample (re-anchoring) took."""
    took = 0.0
    for h in range(hours):
        m = (h + 1) * 3600 * S
        r = ClockReading(f"boot-{boot}", m, m, 0, TIME_ERROR, None)
        t = time.perf_counter()
        timeline.record_sample(conn, source="server-signed", reading=r, utc_ns=T0 + boot * 10 * 86400 * S + m,
                               uncertainty_ns=5_000_000)
        took = time.perf_counter() - t
    return took


def annotate_rate(conn, batch: int = 500) -> float:
    records = [dict(r) for r in conn.execute("SELECT * FROM punches ORDER BY seq")]
    t = time.perf_counter()
    for i in range(0, len(records), batch):
        timeline.annotate(conn, records[i:i + batch])
    return len(records) / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--punches", type=int, default=100_000)
    p.add_argument("--boots", type=int, default=4)
    args = p.parse_args(argv)
    out = {"punches": args.punches, "boots": args.boots, "batch": 500}
    with tempfile.TemporaryDirectory() as tmp:
        punchlog.init(Path(tmp))
        with punchlog.PunchLog(Path(tmp)) as log:
            fill(log.conn, args.punches, args.boots)
            out["unanchored_records_per_s"] = round(annotate_rate(log.conn))
            hours = args.punches // args.boots * 30 // 3600
            out["samples_per_boot"] = hours
            out["last_reanchor_s"] = {}
            for b in range(args.boots - 1):  # the last boot stays without samples: bounded by order
                out["last_reanchor_s"][f"boot-{b}"] = round(sample_boot(log.conn, b, hours), 3)
            timeline._FIT_CACHE.clear()
            t = time.perf_counter()
            timeline.annotate(log.conn, [log.get(1)])
            out["first_annotate_after_restart_s"] = round(time.perf_counter() - t, 3)
            out["anchored_records_per_s"] = round(annotate_rate(log.conn))
    out["target_records_per_s"] = 5000
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
