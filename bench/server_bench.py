"""The central server's pages and recap at regency size: 200 terminals, 10,000 employees and a month of punches
(about 600,000), on SQLite and on a throwaway PostgreSQL cluster, with and without the indexes of
sync/server/storage.py (INDEXES).

The data is written straight into the server's storage (not through ingest: hashing and HTTP are timed by
bench/sync_bench.py): every employee punches masuk, often istirahat, pulang, and apel on Mondays, on the working
days of the month, with derived kinds and lateness as terminals send them, plus heartbeats, fault events and
alarms per terminal, and a published roster of the 10,000 employees with a holiday.

Timed (median of --repeat runs; seconds), each beside what a user would write instead:
- recap: sync.server.recap.build (keyset pages over the month) vs computing it in Python over every stored
  punch (Store.iter_punches, the API that existed before);
- export: CSV (csv module) and XLSX (openpyxl write-only, as recapexport does) vs openpyxl's ordinary mode;
- punch list of one device-day and of one employee-month: Store.punches_of_device_day / punches_of_employee vs
  filtering Store.iter_punches in Python;
- fleet: the fleet page itself (GET /fleet rendered by the server's app on a real HTTP server on 127.0.0.1
  with a logged-in Diskominfo session) and the one query behind it (sync.server.fleet.overview: open faults as
  the page counts them), vs Store.devices() (what the old status page ran);
- the recap page: GET /recap (200 employees a page, built for those rows only), the last page, one employee,
  a figure's page, and the CSV download that builds the whole month (then again, from the page's cache).
The with/without comparison drops the indexes, times, and creates them again (timing their creation on the
full table: what an existing database pays once at its first start with this version).

    python bench/server_bench.py                       # SQLite and PostgreSQL, 10,000 employees, 200 devices
    python bench/server_bench.py --backends sqlite --employees 2000
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import requests  # noqa: E402
from openpyxl import Workbook  # noqa: E402

from sync import asgi  # noqa: E402
from sync.server import accounts, fleet, recap, recapexport  # noqa: E402
from sync.server.app import build_app  # noqa: E402
from sync.server.storage import DERIVED_COLUMNS, INDEXES, PUNCH_COLUMNS, index_ddl, open_store  # noqa: E402
from sync.wire import rosterbundle  # noqa: E402

MONTH, UNTIL, HOLIDAY = "2026-11", dt.date(2026, 11, 30), dt.date(2026, 11, 10)
WIB = dt.timezone(dt.timedelta(hours=7))
S = 10**9


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 4), result


# -- the data -----------------------------------------------------------------------------------------------


def employees(n: int) -> list[str]:
    """18-digit NIPs: birth date, appointment year and month, sex, serial (unique: i // 1000 and i % 1000)."""
    born = [(dt.date(1970, 1, 1) + dt.timedelta(days=(i // 1000) * 400 + i % 9)) for i in range(n)]
    return [f"{b:%Y%m%d}{2000 + i % 20}{i % 12 + 1:02d}{i % 2 + 1}{i % 1000:03d}" for i, b in enumerate(born)]


def _day_punches(rng: random.Random, day: dt.date) -> list[tuple[str, int, int, int]]:
    """(kind, minutes after midnight, minutes late, minutes early) of one employee on one working day."""
    if rng.random() < 0.05:  # absent
        return []
    out = []
    if day.weekday() == 0 and rng.random() < 0.8:
        t = rng.randint(6 * 60 + 50, 7 * 60 + 25)
        out.append(("apel", t, max(0, t - (7 * 60 + 15)), 0))
    t = rng.randint(6 * 60 + 45, 8 * 60 + 10)
    out.append(("masuk", t, max(0, t - (7 * 60 + 30)), 0))
    if rng.random() < 0.8:
        out.append(("istirahat", rng.randint(12 * 60, 12 * 60 + 50), 0, 0))
    if rng.random() < 0.93:
        t = rng.randint(15 * 60 + 30, 17 * 60 + 30)
        out.append(("pulang", t, 0, max(0, 16 * 60 - t)))
    return out


def generate(n_devices: int, n_employees: int, seed: int = 18) -> dict:
    """Rows for punches and punch_derived, per device in seq order (a device's employees punch there)."""
    rng = random.Random(seed)
    nips = employees(n_employees)
    first, last = recap.month_bounds(MONTH)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    working = [d for d in days if d.weekday() < 5 and d != HOLIDAY]
    now = time.time_ns()
    punches, derived = [], []
    for dev_i in range(n_devices):
        device, log_id = f"opd-{dev_i:03d}", hashlib.sha256(f"log{dev_i}".encode()).hexdigest()[:32]
        staff = nips[dev_i::n_devices]
        events = []
        for day in working:
            for emp in staff:
                events += [(day, m, emp, kind, late, early) for kind, m, late, early in _day_punches(rng, day)]
        events.sort(key=lambda e: (e[0], e[1]))
        prev = "0" * 64
        for seq, (day, minute, emp, kind, late, early) in enumerate(events, start=1):
            local = dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=WIB)
            utc = local.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            h = hashlib.sha256(f"{device}{seq}".encode()).hexdigest()
            values = {"device_id": device, "log_id": log_id, "seq": seq, "employee": emp, "method": "face",
                      "kind": "", "details": '{"distance":0.31}', "boot_id": "boot", "monoraw_ns": seq * S,
                      "boottime_ns": seq * S, "realtime_ns": int(local.timestamp() * S), "timex_status": 0,
                      "maxerror_us": 16000, "latitude": None, "longitude": None, "photo_sha256": None,
                      "prev_hash": prev, "hash": h, "utc": utc, "earliest": utc, "latest": utc,
                      "basis": "server-signed", "flags": "[]", "problems": "[]", "source": "push", "received_ns": now}
            prev = h
            punches.append(tuple(values[c] for c in PUNCH_COLUMNS))
            d = {"kind": kind, "minutes_late": late, "minutes_early": early, "local_date": day.isoformat(),
                 "local_time": f"{minute // 60:02d}:{minute % 60:02d}:00", "timezone": "Asia/Jakarta", "workday": 1,
                 "day_name": "", "zk_state": 0, "basis": "server-signed", "computed_from": "utc",
                 "time_verified": 1, "revision": 1}
            derived.append((device, log_id, seq, *(d[c] for c in DERIVED_COLUMNS), now))
    return {"punches": punches, "derived": derived, "nips": nips, "working_days": len(working)}


def _devices_rows(n_devices: int) -> tuple[list, list, list]:
    now = time.time_ns()
    health = {p: {"ok": True, "detail": "x" * 60} for p in ("camera", "fingerprint", "clock", "disk", "database")}
    devices, faults, alarms = [], [], []
    for i in range(n_devices):
        device = f"opd-{i:03d}"
        contact = now - (i % 17) * 3600 * S  # some terminals silent for hours
        hb = {"log_id": "x", "version": "0.1.0", "backlog": i % 5, "health": health, "received_ns": contact}
        devices.append((device, hashlib.sha256(device.encode()).hexdigest(), None, now, contact, json.dumps(hb)))
        for e in range(1, 11):  # raised/cleared pairs; every third device keeps its last fault open
            event = "raised" if e % 2 or (i % 3 == 0 and e == 10) else "cleared"
            faults.append((device, e, f"part{(e + 1) // 2}", event, "camera", "missing", "kamera tidak terdeteksi",
                           "{}", None, now, now))
        alarms += [(device, None, None, "gap", "seq skipped", now) for _ in range(i % 4)]
    return devices, faults, alarms


def load(store, data: dict, n_devices: int) -> float:
    t = time.perf_counter()
    devices, faults, alarms = _devices_rows(n_devices)
    tables = [("punches", PUNCH_COLUMNS, data["punches"]),
              ("punch_derived", ("device_id", "log_id", "seq", *DERIVED_COLUMNS, "received_ns"), data["derived"]),
              ("devices", ("device_id", "token_sha256", "public_key", "created_ns", "last_contact_ns",
                           "last_heartbeat"), devices),
              ("faults", ("device_id", "event_id", "fault_key", "event", "part", "category", "message",
                          "diagnostics", "photo_sha256", "realtime_ns", "received_ns"), faults),
              ("alarms", ("device_id", "log_id", "seq", "kind", "message", "created_ns"), alarms)]
    if store.placeholder == "?":
        with store.transaction() as cur:
            for table, cols, rows in tables:
                store.executemany(cur, f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                                       f"({', '.join('?' * len(cols))})", rows)
    else:
        with store.transaction() as cur:
            for table, cols, rows in tables:
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row(r)
        store.conn.execute("ANALYZE")  # what autovacuum does soon after a bulk load
    employees_ = [{"id": e, "name": f"Pegawai {i}", "uid": i + 1} for i, e in enumerate(data["nips"])]
    store.publish_roster(1, rosterbundle.build_bundle(
        store.server_key(), 1, employees_, {"workdays": ["mon", "tue", "wed", "thu", "fri"]},
        [{"date": HOLIDAY.isoformat(), "name": "Libur daerah"}]))
    return round(time.perf_counter() - t, 1)


# -- what is timed ------------------------------------------------------------------------------------------


def recap_over_all_rows(store) -> list:
    """The obvious alternative: every stored punch through Python, the month picked there."""
    first, last = recap.month_bounds(MONTH)
    names, schedule, holidays, source = recap.published_roster(store)
    cal = recap.calendar(MONTH, schedule, holidays, UNTIL, source or "default")
    rows = []
    for p in store.iter_punches():
        d = p["derived"] or {}
        if d.get("local_date") and first.isoformat() <= d["local_date"] <= last.isoformat():
            rows.append({**p, **{k: d.get(k) for k in ("kind", "minutes_late", "minutes_early", "local_date",
                                                       "local_time", "time_verified", "basis")}})
    return recap.compute(cal, (recap.punch_from_row(r) for r in rows), names)


def xlsx_ordinary_mode(result: recap.Recap, path: Path) -> None:
    """The same two tables with openpyxl's ordinary (in-memory) workbook, the usual first try."""
    wb = Workbook()
    ws = wb.active
    ws.title = "Rekap"
    ws.append([recapexport.HEADERS[c] for c in recapexport.COLUMNS])
    for e in result.employees:
        ws.append(recapexport.row_values(e))
    ws2 = wb.create_sheet("Rincian")
    for e in result.employees:
        for d in e.days:
            ws2.append([e.employee, e.name, d.date, d.arrival_time, d.departure_time, d.minutes_late,
                        d.minutes_early, recapexport.day_remark(d), " ".join(d.punches)])
    wb.save(path)


def _probe(store, nips: list[str]) -> tuple[str, str]:
    """The device and the employee whose lists are timed (one in the middle of each)."""
    return f"opd-{len(store.query_rows('SELECT device_id FROM devices')) // 2:03d}", nips[len(nips) // 2]


def queries(store, nips: list[str], repeat: int) -> dict:
    dev, emp = _probe(store, nips)
    first, last = recap.month_bounds(MONTH)
    out = {}
    out["device_day_s"], rows = _timed(lambda: store.punches_of_device_day(dev, "2026-11-18"), repeat)
    out["device_day_rows"] = len(rows)
    out["employee_month_s"], rows = _timed(
        lambda: store.punches_of_employee(emp, first.isoformat(), last.isoformat()), repeat)
    out["employee_month_rows"] = len(rows)
    out["fleet_overview_s"], rows = _timed(lambda: fleet.overview(store, SILENT_AFTER_S), repeat)
    out["fleet_devices"] = len(rows)
    out["fleet_open_faults"] = sum(len(r["open_faults"]) for r in rows)
    out["fleet_silent"] = sum(1 for r in rows if r["silent"])
    out |= fleet_page(store, repeat)
    out["recap_s"], result = _timed(lambda: recap.build(store, MONTH, until=UNTIL), max(1, repeat // 2))
    return out | {"_recap": result}


PASSWORD = "bench-kata-sandi-panjang"
SILENT_AFTER_S = 4 * 3600.0


def _session(url: str, user: str) -> requests.Session:
    s = requests.Session()
    form = s.get(url + "/login", timeout=30).text
    token = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = s.post(url + "/login", data={"csrf": token, "username": user, "password": PASSWORD}, allow_redirects=False,
               timeout=30)
    assert r.status_code == 303, r.text[:300]
    return s


def _get(s: requests.Session, url: str) -> str:
    r = s.get(url, timeout=600)
    assert r.status_code == 200, (url, r.status_code)
    return r.text


def fleet_page(store, repeat: int) -> dict:
    """GET /fleet as Diskominfo's browser gets it: the app on a real HTTP server, a logged-in session."""
    served = asgi.Served(build_app(store), "127.0.0.1", 0, name="bench-http")
    try:
        s = _session(served.url, "bench-dk")
        seconds, html = _timed(lambda: _get(s, served.url + "/fleet"), repeat)
        return {"fleet_page_s": seconds, "fleet_page_bytes": len(html.encode()),
                "fleet_page_rows": html.count('id="device-')}
    finally:
        served.stop()


def recap_page(store, nips: list[str]) -> dict:
    """GET /recap as BKPSDM's browser gets it: the first and the last page of 200 rows, one employee's row, a
    figure's page (each builds only its rows), then the CSV download (the whole month) and a second download
    right after (from the page's cache of whole months)."""
    served = asgi.Served(build_app(store), "127.0.0.1", 0, name="bench-http")
    try:
        s = _session(served.url, "bench-bk")
        first, html = _timed(lambda: _get(s, served.url + f"/recap?month={MONTH}"), 1)
        last_page = (len(nips) + 199) // 200
        last, last_html = _timed(lambda: _get(s, served.url + f"/recap?month={MONTH}&page={last_page}"), 1)
        emp = nips[len(nips) // 2]
        one, _ = _timed(lambda: _get(s, served.url + f"/recap?month={MONTH}&employee={emp}"), 1)
        figure, _ = _timed(lambda: _get(s, served.url + f"/recap/punches?month={MONTH}&employee={emp}"
                                           "&figure=days_present"), 1)
        download, _ = _timed(lambda: _get(s, served.url + f"/recap.csv?month={MONTH}"), 1)
        again, _ = _timed(lambda: _get(s, served.url + f"/recap.csv?month={MONTH}"), 1)
        return {"recap_page_first_s": first, "recap_page_rows": html.count('class="employee-row"'),
                "recap_page_last_s": last, "recap_page_last_rows": last_html.count('class="employee-row"'),
                "recap_page_one_employee_s": one, "recap_figure_page_s": figure,
                "recap_csv_download_s": download, "recap_csv_download_again_s": again}
    finally:
        served.stop()


def alternatives(store, nips: list[str], result: recap.Recap, tmp: Path) -> dict:
    dev, emp = _probe(store, nips)
    out = {}
    out["device_day_via_iter_punches_s"], _ = _timed(lambda: [
        p for p in store.iter_punches(dev) if (p["derived"] or {}).get("local_date") == "2026-11-18"], 1)
    out["employee_month_via_iter_punches_s"], _ = _timed(lambda: [
        p for p in store.iter_punches() if p["employee"] == emp], 1)
    out["fleet_via_devices_s"], _ = _timed(store.devices, 1)
    out["recap_python_over_all_rows_s"], rows = _timed(lambda: recap_over_all_rows(store), 1)
    same = [r.as_dict() for r in rows] == [e.as_dict() for e in result.employees]
    out["recap_python_over_all_rows_same_result"] = same
    out["xlsx_openpyxl_ordinary_mode_s"], _ = _timed(lambda: xlsx_ordinary_mode(result, tmp / "ordinary.xlsx"), 1)
    return out


def exports(result: recap.Recap, tmp: Path) -> dict:
    out = {}
    out["csv_s"], _ = _timed(lambda: recapexport.save(result, "csv", tmp / "rekap.csv"), 1)
    out["xlsx_s"], _ = _timed(lambda: recapexport.save(result, "xlsx", tmp / "rekap.xlsx"), 1)
    out["csv_bytes"] = (tmp / "rekap.csv").stat().st_size
    out["xlsx_bytes"] = (tmp / "rekap.xlsx").stat().st_size
    out["rincian_rows"] = sum(len(e.days) for e in result.employees)
    return out


def sqlite_plans(store, nips: list[str]) -> dict:
    """Which index SQLite picks for each page query (EXPLAIN QUERY PLAN, detail column)."""
    if store.placeholder != "?":
        return {}
    sql = {"device_day": ("SELECT * FROM punch_derived d JOIN punches p ON p.device_id = d.device_id AND "
                          "p.log_id = d.log_id AND p.seq = d.seq WHERE d.local_date = ? AND d.device_id = ?",
                          ("2026-11-18", _probe(store, nips)[0])),
           "employee_month": ("SELECT * FROM punches p JOIN punch_derived d ON d.device_id = p.device_id AND "
                              "d.log_id = p.log_id AND d.seq = p.seq WHERE p.employee = ? AND d.local_date >= ? "
                              "AND d.local_date <= ?", (_probe(store, nips)[1], "2026-11-01", "2026-11-30"))}
    return {k: [r[-1] for r in store.query_rows("EXPLAIN QUERY PLAN " + q, a)] for k, (q, a) in sql.items()}


def drop_indexes(store) -> None:
    with store.transaction() as cur:
        for name in INDEXES:
            cur.execute(f"DROP INDEX IF EXISTS {name}")


def create_indexes(store) -> float:
    t = time.perf_counter()
    with store.transaction() as cur:
        for stmt in index_ddl():
            cur.execute(stmt)
    if store.placeholder != "?":
        store.conn.execute("ANALYZE")
    return round(time.perf_counter() - t, 2)


def run_backend(name: str, db: str, data: dict, args, tmp: Path) -> dict:
    store = open_store(db, key_dir=tmp / f"{name}.keys")
    out = {"backend": name, "load_s": load(store, data, args.devices), "punches": store.punch_count()}
    accounts.add(store, "bench-dk", "diskominfo", PASSWORD, actor="bench")
    accounts.add(store, "bench-bk", "bkpsdm", PASSWORD, actor="bench")
    out["silent_faults_raised"] = len(fleet.check_silent(store, SILENT_AFTER_S)["raised"])  # as the server's watch
    drop_indexes(store)
    without = queries(store, data["nips"], args.repeat)
    without.pop("_recap")
    out["create_indexes_s"] = create_indexes(store)
    with_idx = queries(store, data["nips"], args.repeat)
    result = with_idx.pop("_recap")
    out["without_indexes"], out["with_indexes"] = without, with_idx
    out["query_plans"] = sqlite_plans(store, data["nips"])
    out["pages"] = recap_page(store, data["nips"])
    out["export"] = exports(result, tmp)
    out["alternatives"] = alternatives(store, data["nips"], result, tmp)
    out["recap_check"] = {"employees": len(result.employees), "working_days": len(result.calendar.working_days),
                          "notes": result.notes}
    store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--employees", type=int, default=10_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the SQLite file and exports go (default: a temp dir)")
    args = ap.parse_args()
    t = time.perf_counter()
    data = generate(args.devices, args.employees)
    report = {"benchmark": "central server pages and monthly recap", "devices": args.devices,
              "employees": args.employees, "punches": len(data["punches"]), "month": MONTH,
              "working_days": data["working_days"], "generate_s": round(time.perf_counter() - t, 1),
              "load_average": os.getloadavg(), "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                report["runs"].append(run_backend("sqlite", str(tmp / "central.db"), data, args, tmp))
            elif backend == "postgres":
                from synctools import postgres_cluster, postgres_unavailable

                reason = postgres_unavailable()
                if reason:
                    report["runs"].append({"backend": "postgres", "skipped": reason})
                    continue
                with postgres_cluster() as new_db:
                    report["runs"].append(run_backend("postgres", new_db(), data, args, tmp))
            print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
