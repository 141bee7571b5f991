"""The monthly recap for BKPSDM from punches recorded by real terminals (the punch service on a real punch log,
with the clock readings of the day in question) and pushed over real HTTP to the reference central server, on
SQLite and on a throwaway PostgreSQL cluster: every figure matches what the punches say (late minutes from
the window, a missing pulang, an apel, a holiday, an unverified time, an edited record), each figure names the
stored punches behind it, and the CSV and XLSX that `presensi server recap` writes read back (csv module,
openpyxl) with the same figures and the 18-digit NIP as text."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import sqlite3
import time

import openpyxl
import pytest
from synctools import make_terminal, presensi, serve_in_thread

from sync.device import push
from sync.server import recap, recapexport
from sync.server.app import add_device, make_app
from sync.server.storage import open_store
from sync.wire import rosterbundle
from terminal import config as config_mod
from terminal.log import punchlog
from terminal.punch.service import PunchService
from terminal.timing import clock, timeline

S = 10**9
WIB = dt.timezone(dt.timedelta(hours=7))
A, B, C = "198501012010011001", "199003152015022002", "197812312006041003"
ODD = "=2+3"  # an employee id that a spreadsheet would run as a formula
SCHEDULE = """
[schedule]
repeat_minutes = 5.0
workdays = ["mon", "tue", "wed", "thu", "fri"]
[schedule.default]
apel = "06:45-07:15-07:30"
masuk = "07:00-07:30-10:00"
pulang = "13:00-16:00-23:00"
"""
HOLIDAY = {"date": "2026-11-10", "name": "Libur daerah"}  # published with the roster; the terminals do not know it
UNTIL = dt.date(2026, 11, 30)

# (terminal, employee, local time, details, verified clock): in time order per terminal
PUNCHES = [
    ("dev-01", A, "2026-11-02 07:10", None, True),  # apel, on time
    ("dev-02", B, "2026-11-02 07:32", None, True),  # masuk, 2 minutes late (apel takes 07:30:59)
    ("dev-02", ODD, "2026-11-02 07:40", None, True),
    ("dev-01", A, "2026-11-02 16:05", None, True),  # pulang
    ("dev-01", B, "2026-11-02 16:00", None, True),  # pulang on another terminal, on time
    ("dev-01", A, "2026-11-03 07:42", None, True),  # masuk, 12 minutes late
    ("dev-02", B, "2026-11-03 07:40", None, True),  # edited on the terminal before delivery (see below)
    ("dev-01", A, "2026-11-03 15:50", {"work_code": "2"}, True),  # pulang 10 minutes early, work code 2
    ("dev-01", A, "2026-11-04 07:35", None, True),  # masuk 5 late (apel closed at 07:30); no pulang
    ("dev-01", A, "2026-11-05 16:10", None, True),  # pulang only: masuk missing
    ("dev-01", A, "2026-11-06 07:50", None, False),  # masuk 20 late, on a clock no sample confirmed
    ("dev-01", A, "2026-11-06 16:00", None, True),
    ("dev-01", A, "2026-11-07 08:00", None, True),  # Saturday
    ("dev-01", B, "2026-11-09 08:00", None, True),  # Monday, apel cancelled: masuk 30 late, no apel missed
    ("dev-01", B, "2026-11-09 16:00", None, True),
    ("dev-01", A, "2026-11-10 07:30", None, True),  # the published holiday
]

EXPECTED = {  # what the punches above say, figure by figure (20 working days: 21 weekdays less the holiday)
    A: {"working_days": 20, "days_present": 5, "days_absent": 15, "minutes_late": 12 + 5 + 20,
        "minutes_early": 10, "missing_masuk": 1, "missing_pulang": 1, "apel_attended": 1, "apel_missed": 0,
        "days_off_worked": 2,
        "unverified": 1, "excluded": 0, "work_codes": {"2": 1}},
    B: {"working_days": 20, "days_present": 2, "days_absent": 18, "minutes_late": 2 + 30, "minutes_early": 0,
        "missing_masuk": 0, "missing_pulang": 0, "apel_attended": 0, "apel_missed": 1, "days_off_worked": 0,
        "unverified": 0,
        "excluded": 0, "work_codes": {}},
    C: {"working_days": 20, "days_present": 0, "days_absent": 20, "minutes_late": 0, "minutes_early": 0,
        "missing_masuk": 0, "missing_pulang": 0, "apel_attended": 0, "apel_missed": 0, "days_off_worked": 0,
        "unverified": 0, "excluded": 1, "work_codes": {}},
    ODD: {"working_days": 20, "days_present": 1, "days_absent": 19, "minutes_late": 10, "minutes_early": 0,
          "missing_masuk": 0, "missing_pulang": 1, "apel_attended": 0, "apel_missed": 1, "days_off_worked": 0,
          "unverified": 0, "excluded": 0, "work_codes": {}},
}
NAMES = {A: "Sri Wahyuni", B: "Made Ayu Lestari", C: "Yohanes Kambu"}


@pytest.fixture(params=["sqlite", "postgres"])
def central(request, tmp_path):
    db = str(tmp_path / "central.db") if request.param == "sqlite" else request.getfixturevalue("pg")()
    app = make_app(db)
    with serve_in_thread(app) as url:
        yield app, url, db
    app.store.close()


def _reading(boot: str, local: dt.datetime, *, wall_error: bool) -> clock.ClockReading:
    """The clock readings of a punch at `local` on a boot whose monotonic clock started at 2026-11-01."""
    mono = (local - dt.datetime(2026, 11, 1, tzinfo=WIB)).total_seconds() + 100
    real = clock.read()
    return dataclasses.replace(real, boot_id=boot, monoraw_ns=int(mono * S), boottime_ns=int(mono * S),
                               realtime_ns=int(local.timestamp() * S),
                               timex_status=clock.TIME_ERROR if wall_error else 0, maxerror_us=16_000_000)


def _record(tmp_path, url, app) -> dict[str, object]:
    """Each terminal punches its part of PUNCHES through the punch service, then pushes everything."""
    terminals = {}
    for dev in ("dev-01", "dev-02"):
        path, _ = make_terminal(tmp_path, url, add_device(app.store, dev), device=dev)
        path.write_text(path.read_text() + SCHEDULE)
        terminals[dev] = config_mod.load(str(path))
    for dev, cfg in terminals.items():
        with punchlog.PunchLog(cfg.state_dir) as log:
            service = PunchService(cfg, log)
            for where, employee, when, details, verified in PUNCHES:
                if where != dev:
                    continue
                local = dt.datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=WIB)
                boot = "boot-ok" if verified else "boot-unsynced"
                if verified:  # a trusted sample a second before the punch confirms this boot's clock
                    timeline.record_sample(log.conn, source="manual", utc_ns=int(local.timestamp() * S) - S,
                                           reading=_reading(boot, local - dt.timedelta(seconds=1),
                                                            wall_error=False), uncertainty_ns=50_000_000)
                out = service.punch(employee, "pin", details=details, reading=_reading(boot, local,
                                                                                      wall_error=not verified))
                assert out.record is not None and out.time_verified is verified, (employee, when, out)
    # what an attacker with dev-02's SD card does before delivery: B's 11-03 punch becomes C's
    conn = sqlite3.connect(punchlog.db_path(terminals["dev-02"].state_dir))
    conn.execute("DROP TRIGGER IF EXISTS punches_no_update")
    conn.execute("UPDATE punches SET employee=? WHERE employee=? AND seq=3", (C, B))
    conn.commit()
    conn.close()
    for cfg in terminals.values():
        assert push.Pusher(cfg.state_dir, push.Settings.from_config(cfg)).drain(time.monotonic() + 60)["done"]
    return terminals


# the published calendar: apel pagi on Mondays (2, 9, 16, 23 and 30 November), the one of the 9th cancelled
PUBLISHED = {"workdays": ["mon", "tue", "wed", "thu", "fri"], "mon": {"apel": "06:45-07:15-07:30"}}
CANCELLED = ("2026-11-09", "Upacara HUT kabupaten")


def _publish_roster(store, db) -> None:
    employees = [{"id": e, "name": n, "uid": i + 1} for i, (e, n) in enumerate(NAMES.items())]
    store.publish_roster(1, rosterbundle.build_bundle(store.server_key(), 1, employees, PUBLISHED, [HOLIDAY]))
    presensi("server", "apel", "cancel", CANCELLED[0], "--reason", CANCELLED[1], "--db", db)


def _figures(row: recap.EmployeeRecap) -> dict:
    return {k: getattr(row, k) for k in EXPECTED[A]}


def test_recap_of_punches_from_real_terminals_matches_the_punches_and_its_files(central, tmp_path):
    app, url, db = central
    _record(tmp_path, url, app)
    _publish_roster(app.store, db)
    result = recap.build(app.store, "2026-11", until=UNTIL)

    rows = {r.employee: r for r in result.employees}
    assert list(rows) == sorted(EXPECTED)  # C has no punch of his own, and still gets a row
    for employee, figures in EXPECTED.items():
        assert _figures(rows[employee]) == figures, employee
    assert rows[A].name == "Sri Wahyuni" and rows[ODD].name == ""
    assert result.calendar.days_off[dt.date(2026, 11, 10)] == "Libur daerah"
    assert result.calendar.source == "roster 2" and result.notes == []  # the cancellation published version 2
    # apel pagi: the Mondays but the cancelled one; B was present without apel on the 2nd (missed) and on the
    # 9th (cancelled: not missed)
    assert [d.isoformat() for d in result.calendar.apel_days] == ["2026-11-02", "2026-11-16", "2026-11-23",
                                                                 "2026-11-30"]
    assert result.calendar.apel_cancelled == {dt.date(2026, 11, 9): CANCELLED[1]}
    assert rows[B].dates["apel_missed"] == ["2026-11-02"] and rows[ODD].dates["apel_missed"] == ["2026-11-02"]
    b09 = next(d for d in rows[B].days if d.date == "2026-11-09")
    assert b09.punches and not b09.apel_day and not b09.apel_missed
    assert rows[A].dates["missing_pulang"] == ["2026-11-04"] and rows[A].dates["missing_masuk"] == ["2026-11-05"]
    assert rows[A].dates["days_off_worked"] == ["2026-11-07", "2026-11-10"]
    assert rows[C].dates["days_absent"][0] == "2026-11-02" and len(rows[C].dates["days_absent"]) == 20

    # a page of the recap builds only the rows it shows (recap.month_employees says whose), and each is the row
    # the whole month holds; an employee outside the roster has a row only in a month they punched in
    assert recap.month_employees(app.store, "2026-11") == sorted(EXPECTED)
    assert recap.month_employees(app.store, "2026-12") == sorted(NAMES)
    for subset in ([A], [C, B], [ODD, A]):
        part = recap.build(app.store, "2026-11", until=UNTIL, employees=subset)
        assert [r.as_dict() for r in part.employees] == [rows[e].as_dict() for e in sorted(subset)], subset
        assert part.notes == result.notes and part.calendar == result.calendar

    # every figure names the stored punches behind it, and they say what the figure counts
    def stored(pid):
        device, log_id, seq = recap.parse_punch_id(pid)
        return next(p for p in app.store.iter_punches(device) if (p["log_id"], p["seq"]) == (log_id, seq))

    late = [stored(p) for p in rows[A].punches["minutes_late"]]
    assert [(p["derived"]["local_date"], p["derived"]["kind"], p["derived"]["minutes_late"]) for p in late] == [
        ("2026-11-03", "masuk", 12), ("2026-11-04", "masuk", 5), ("2026-11-06", "masuk", 20)]
    apel = [stored(p)["derived"] for p in rows[A].punches["apel_attended"]]
    assert [(d["local_date"], d["kind"], d["local_time"]) for d in apel] == [("2026-11-02", "apel", "07:10:00")]
    early = stored(rows[A].punches["minutes_early"][0])
    assert early["derived"]["minutes_early"] == 10 and early["employee"] == A
    unverified = stored(rows[A].punches["unverified"][0])
    assert unverified["derived"]["time_verified"] is False and unverified["derived"]["local_time"] == "07:50:00"
    assert [stored(p)["derived"]["kind"] for p in rows[A].punches["missing_pulang"]] == ["masuk"]
    forged = stored(rows[C].punches["excluded"][0])
    assert forged["employee"] == C and "edited" in forged["problems"]
    b_days = {d.date: d for d in rows[B].days}
    assert "2026-11-03" not in b_days or not b_days["2026-11-03"].punches  # the edited record counts for nobody
    assert {recap.parse_punch_id(p)[0] for p in rows[B].punches["days_present"]} == {"dev-01", "dev-02"}

    # the punch lists the pages show: one device-day, one employee's month over both terminals
    day = app.store.punches_of_device_day("dev-01", "2026-11-03")
    assert [(p["employee"], p["derived"]["kind"], p["derived"]["local_time"]) for p in day] == [
        (A, "masuk", "07:42:00"), (A, "pulang", "15:50:00")]
    month = app.store.punches_of_employee(B, "2026-11-01", "2026-11-30")
    assert [(p["device_id"], p["derived"]["local_time"]) for p in month] == [
        ("dev-02", "07:32:00"), ("dev-01", "16:00:00"), ("dev-01", "08:00:00"), ("dev-01", "16:00:00")]

    # the files BKPSDM gets, written by the command line, read back with the same figures
    out_csv, out_xlsx = tmp_path / "rekap.csv", tmp_path / "rekap.xlsx"
    for fmt, out in (("csv", out_csv), ("xlsx", out_xlsx)):
        presensi("server", "recap", "--month", "2026-11", "--until", UNTIL.isoformat(), "--format", fmt,
                 "--out", out, "--db", db)
    with open(out_csv, encoding="utf-8-sig", newline="") as f:
        csv_rows = list(csv.reader(f))
    book = openpyxl.load_workbook(out_xlsx)
    assert book.sheetnames == ["Rekap", "Rincian", "Keterangan"]
    sheet = book["Rekap"]
    xlsx_rows = [[c.value for c in r] for r in sheet.iter_rows()]
    header = [recapexport.HEADERS[c] for c in recapexport.COLUMNS]
    assert csv_rows[0] == header == xlsx_rows[0]
    assert header[:4] == ["NIP", "Nama", "Hari kerja", "Hari hadir"]
    for line, cells in zip(csv_rows[1:], list(sheet.iter_rows())[1:], strict=True):
        nip = line[0].removeprefix("'")
        figures = EXPECTED[nip]
        for name, text, cell in zip(recapexport.COLUMNS[2:], line[2:], cells[2:], strict=True):
            want = recapexport.work_codes_text(figures["work_codes"]) if name == "work_codes" else figures[name]
            assert (text, cell.value) == (str(want), want if want != "" else None), (nip, name)  # empty: no cell
        assert isinstance(cells[0].value, str) and cells[0].value == nip and cells[0].data_type == "s"
    nips = [r[0] for r in csv_rows[1:]]
    assert [n for n in nips if n.isdigit()] == [C, A, B] and all(len(n) == 18 for n in (A, B, C))
    assert all(cells[0].number_format == "@" for cells in list(sheet.iter_rows())[1:])
    # the odd employee id stays text: an apostrophe in the CSV, a string cell (no formula) in the XLSX
    assert "'=2+3" in nips and ODD in [r[0] for r in xlsx_rows[1:]]
    assert not any(c.data_type == "f" for ws in book for r in ws.iter_rows() for c in r)

    # the Rincian sheet: one row per day, with the punches behind it
    days = [[c.value for c in r] for r in book["Rincian"].iter_rows(min_row=2)]
    a03 = next(r for r in days if r[0] == A and r[2] == "2026-11-03")
    assert a03[4:10] == ["07:42", "15:50", 12, 10, None, None] and len(a03[10].split()) == 2
    a04 = next(r for r in days if r[0] == A and r[2] == "2026-11-04")
    assert a04[9] == "Tidak absen pulang"
    assert [r[9] for r in days if r[0] == C] == ["Tidak hadir"] * 20
    notes = {r[0].value: r[1].value for r in book["Keterangan"].iter_rows()}
    assert notes["Kalender"] == "roster 2" and notes["Jumlah hari kerja"] == "20" and notes["Hari apel"] == "4"
    assert notes["Apel ditiadakan"] == "2026-11-09 " + CANCELLED[1]
    b02 = next(r for r in days if r[0] == B and r[2] == "2026-11-02")
    assert b02[9] == "Tidak ikut apel"


def test_recap_command_refuses_what_it_cannot_do_and_says_so(tmp_path):
    db = tmp_path / "central.db"
    bad = presensi("server", "recap", "--month", "2026-13", "--db", db, check=False)
    assert bad.returncode != 0 and "YYYY-MM" in bad.stderr
    binary = presensi("server", "recap", "--month", "2026-11", "--format", "xlsx", "--db", db, check=False)
    assert binary.returncode != 0 and "--out" in binary.stderr
    missing_dir = presensi("server", "recap", "--month", "2026-11", "--out", tmp_path / "no" / "r.csv",
                           "--db", db, check=False)
    assert missing_dir.returncode != 0 and "cannot write" in missing_dir.stderr
    assert not (tmp_path / "no").exists()
    # without a roster: stated on stderr, the CSV on stdout holds only the header
    empty = presensi("server", "recap", "--month", "2026-11", "--until", "2026-11-30", "--db", db)
    assert "no roster is published" in empty.stderr
    assert list(csv.reader(io.StringIO(empty.stdout))) == [[recapexport.HEADERS[c] for c in recapexport.COLUMNS]]
    # a published roster the recap cannot trust or read: refused with what to do, no file written
    store = open_store(db)
    store.publish_roster(1, b"not a signed bundle")
    store.publish_roster(2, rosterbundle.build_bundle(store.server_key(), 2, [], {"workdays": ["funday"]}, []))
    store.close()
    out = tmp_path / "r.xlsx"
    bad_calendar = presensi("server", "recap", "--month", "2026-11", "--format", "xlsx", "--out", out, "--db", db,
                            check=False)
    assert bad_calendar.returncode != 0 and "funday" in bad_calendar.stderr and "publish-roster" in bad_calendar.stderr
    store = open_store(db)
    with store.transaction() as cur:
        cur.execute("DELETE FROM rosters WHERE version = 2")
    store.close()
    unsigned = presensi("server", "recap", "--month", "2026-11", "--format", "xlsx", "--out", out, "--db", db,
                        check=False)
    assert unsigned.returncode != 0 and "roster version 1 cannot be read" in unsigned.stderr
    assert not out.exists() and not list(tmp_path.glob(".r.xlsx.*"))


def test_a_newly_published_roster_is_read_again_and_a_tampered_one_is_refused(tmp_path):
    """The checked roster is kept by its digest: a new version counts at once, and a newer one that is not a
    signed bundle is checked and refused, however often the version before it was read."""
    store = open_store(str(tmp_path / "central.db"), key_dir=tmp_path / "keys")
    workdays = {"workdays": ["mon", "tue", "wed", "thu", "fri"]}
    store.publish_roster(1, rosterbundle.build_bundle(store.server_key(), 1, [{"id": A, "name": "A", "uid": 1}],
                                                      workdays, []))
    for _ in range(3):
        assert recap.month_employees(store, "2026-11") == [A]
    store.publish_roster(2, rosterbundle.build_bundle(store.server_key(), 2, [{"id": A, "name": "A", "uid": 1},
                                                                          {"id": B, "name": "B", "uid": 2}],
                                                      workdays, []))
    assert recap.month_employees(store, "2026-11") == [A, B]
    assert recap.build(store, "2026-11", until=UNTIL).calendar.source == "roster 2"
    store.publish_roster(3, b"not a signed bundle")
    with pytest.raises(recap.RecapError, match="publish-roster"):
        recap.month_employees(store, "2026-11")
    store.close()
