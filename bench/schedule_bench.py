"""Cost of the schedule's per-punch work on a log of realistic size: looking up the employee's recent
punches (repeat detection) and deciding the kind, with the (employee, seq) index of schema step 5 and
without it (a scan of the punch table, what the query does on an unindexed table). Prints JSON.

    python bench/schedule_bench.py [--punches 200000] [--employees 400] [--lookups 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from terminal import config  # noqa: E402
from terminal.log import punchlog  # noqa: E402
from terminal.punch import history, rules  # noqa: E402
from terminal.timing import clock  # noqa: E402


def fill(log: punchlog.PunchLog, punches: int, employees: int) -> None:
    """Punch-shaped rows written directly (not hash-chained): only the look-up cost is measured here."""
    r = clock.read()
    rows = [(i + 1, log.log_id, f"19900{i % employees:04d}", "face", "masuk", "{}", r.boot_id, i, i,
             r.realtime_ns - (punches - i) * 10**9, 0, 0, "", "") for i in range(punches)]
    log.conn.execute("DROP TRIGGER IF EXISTS punches_no_update")
    log.conn.execute("BEGIN")
    log.conn.executemany(
        "INSERT INTO punches (seq, log_id, employee, method, kind, details, boot_id, monoraw_ns, boottime_ns, "
        "realtime_ns, timex_status, maxerror_us, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    log.conn.execute("COMMIT")


def measure(log, sched, employees: int, lookups: int, reading=None) -> dict:
    rng = random.Random(1)
    now = dt.datetime.now(dt.UTC)
    times = []
    for _ in range(lookups):
        emp = f"19900{rng.randrange(employees):04d}"
        t0 = time.perf_counter()
        history.decide_for_log(sched, log.conn, emp, "Pegawai", now, reading)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(times[int(len(times) * 0.95)], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--punches", type=int, default=200_000)
    ap.add_argument("--employees", type=int, default=400)
    ap.add_argument("--lookups", type=int, default=300)
    args = ap.parse_args()
    cfg = config.from_dict({"device": {"id": "bench"}, "paths": {"state_dir": "/nonexistent"}})
    sched = rules.Schedule.from_config(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        punchlog.init(Path(tmp))
        with punchlog.PunchLog(Path(tmp)) as log:
            fill(log, args.punches, args.employees)
            # a terminal up since before today (the usual case): its punches are placed by the monotonic clock
            up_for_days = dataclasses.replace(clock.read(), boottime_ns=3 * 86400 * 10**9)
            indexed = measure(log, sched, args.employees, args.lookups, up_for_days)
            # just rebooted: earlier boots' punches need terminal.timing.timeline's annotation
            after_reboot = measure(log, sched, args.employees, max(10, args.lookups // 10),
                                   dataclasses.replace(clock.read(), boot_id="new-boot", boottime_ns=60 * 10**9))
            log.conn.execute("DROP INDEX punches_employee_seq")
            scan = measure(log, sched, args.employees, max(10, args.lookups // 10), up_for_days)
    print(json.dumps({"punches": args.punches, "employees": args.employees,
                      "decide_for_log_indexed": indexed, "decide_for_log_after_reboot": after_reboot,
                      "decide_for_log_table_scan_no_index": scan}, indent=2))


if __name__ == "__main__":
    main()
