"""The monthly recap as files for BKPSDM: CSV (one row per employee, for import into other systems) and
XLSX (openpyxl) with three sheets: `Rekap` (one row per employee, the same columns as the CSV), `Rincian`
(one row per employee and day, with the punch ids behind each day, so every figure can be checked) and
`Keterangan` (the month, the calendar the working days come from, the rules and the notes).

Headers are in Bahasa Indonesia. The NIP (18 digits) is always text: a string cell formatted '@' in XLSX, so
Excel never turns it into 1.98501E+17; in the CSV it is plain digits, as importing systems expect (Excel users
open the XLSX). Text that comes from terminals or the roster (names, ids, work codes) never becomes a formula:
in XLSX every such cell is typed as a string, in the CSV a cell starting with = + - @ or a tab gets a leading
apostrophe (the usual defence against CSV injection). Files are written to a temporary file and renamed, so a
failed export leaves no half file behind.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from .recap import FIGURES, Day, EmployeeRecap, Recap

HEADERS = {
    "employee": "NIP", "name": "Nama", "working_days": "Hari kerja", "days_present": "Hari hadir",
    "days_absent": "Tidak hadir", "minutes_late": "Terlambat (menit)", "minutes_early": "Pulang cepat (menit)",
    "missing_masuk": "Tidak absen masuk", "missing_pulang": "Tidak absen pulang", "apel_attended": "Apel diikuti",
    "apel_missed": "Tidak ikut apel",
    "days_off_worked": "Hadir di hari libur", "work_codes": "Kode kerja",
    "unverified": "Waktu belum terverifikasi", "excluded": "Presensi ditolak (alarm)",
}
COLUMNS = ("employee", "name", *FIGURES[:10], "work_codes", *FIGURES[10:])
DAY_HEADERS = ("NIP", "Nama", "Tanggal", "Hari kerja", "Masuk", "Pulang", "Terlambat (menit)",
               "Pulang cepat (menit)", "Apel", "Keterangan", "ID presensi")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
RULES = (
    "Hari kerja: hari kerja bulan ini menurut kalender yang diterbitkan bersama roster (hari kerja, hari libur, "
    "hari khusus), sampai tanggal rekap.",
    "Hari hadir: hari kerja dengan sedikitnya satu presensi yang sah.",
    "Terlambat: menit terlambat presensi kedatangan pertama (apel atau masuk) tiap hari, dihitung terminal "
    "dari waktu yang telah dikoreksi.",
    "Pulang cepat: menit pulang cepat presensi pulang terakhir tiap hari.",
    "Tidak absen masuk / pulang: hari hadir tanpa presensi masuk (atau apel) / tanpa presensi pulang.",
    "Tidak ikut apel: hari hadir dengan apel pagi (menurut jadwal yang diterbitkan) tanpa presensi apel; hari "
    "yang apelnya ditiadakan tidak dihitung.",
    "Waktu belum terverifikasi: presensi yang waktunya belum dikonfirmasi sumber waktu tepercaya; tetap "
    "dihitung, mohon diperiksa.",
    "Presensi ditolak (alarm): rekaman yang gagal pemeriksaan keutuhan (hash/rantai); tidak dihitung.",
    "Cuti, dinas luar dan sakit tidak diketahui sistem ini: hari tersebut tanpa presensi terhitung tidak hadir.",
)


def work_codes_text(codes: dict[str, int]) -> str:
    """{"3": 2, "1": 1} -> "1 (1x), 3 (2x)"."""
    return ", ".join(f"{code} ({n}x)" for code, n in sorted(codes.items()))


def row_values(e: EmployeeRecap) -> list:
    return [work_codes_text(e.work_codes) if c == "work_codes" else getattr(e, c) for c in COLUMNS]


# -- CSV -------------------------------------------------------------------------------------------------------


def csv_cell(value):
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(recap: Recap, out) -> None:
    """The `Rekap` table as CSV (comma, RFC 4180 quoting) to a text stream."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([HEADERS[c] for c in COLUMNS])
    for e in recap.employees:
        w.writerow([csv_cell(v) for v in row_values(e)])


def csv_text(recap: Recap) -> str:
    buf = io.StringIO()
    write_csv(recap, buf)
    return buf.getvalue()


# -- XLSX ------------------------------------------------------------------------------------------------------


def write_xlsx(recap: Recap, path: str | Path) -> None:
    """The workbook (write-only mode: 10,000 employees x 22 days stay within bounded memory)."""
    wb = Workbook(write_only=True)
    _rekap_sheet(wb, recap)
    _rincian_sheet(wb, recap)
    _keterangan_sheet(wb, recap)
    _atomic(path, wb.save)


def _text(ws, value: str, *, bold: bool = False) -> WriteOnlyCell:
    """A cell that is text whatever it looks like: never a formula, never a number, and formatted as text
    so that it stays text when edited (the NIP)."""
    cell = WriteOnlyCell(ws, value=value)
    cell.data_type = "s"
    cell.number_format = "@"
    if bold:
        cell.font = Font(bold=True)
    return cell


def _plain(ws, value):
    """A value as written: a str is a string cell already, except one openpyxl would take for a formula."""
    if value == "":
        return None
    if isinstance(value, str) and value.startswith("="):
        cell = WriteOnlyCell(ws, value=value)
        cell.data_type = "s"
        return cell
    return value


def _header(ws, titles, widths) -> None:
    for i, width in enumerate(widths):
        ws.column_dimensions[chr(ord("A") + i)].width = width
    ws.freeze_panes = "C2"
    ws.append([_text(ws, t, bold=True) for t in titles])


def _rekap_sheet(wb, recap: Recap) -> None:
    ws = wb.create_sheet("Rekap")
    _header(ws, [HEADERS[c] for c in COLUMNS], [21, 30, *[12] * 10, 18, 14, 14])
    for e in recap.employees:
        values = row_values(e)
        ws.append([_text(ws, values[0]), *(_plain(ws, v) for v in values[1:])])


def _rincian_sheet(wb, recap: Recap) -> None:
    ws = wb.create_sheet("Rincian")
    _header(ws, DAY_HEADERS, [21, 30, 12, 10, 9, 9, 12, 12, 7, 24, 60])
    for e in recap.employees:
        nip, name = _text(ws, e.employee), _plain(ws, e.name)  # one cell per employee, written once per day
        for day in e.days:
            values = [day.date, "Ya" if day.working else "Tidak", day.arrival_time[:5], day.departure_time[:5],
                      day.minutes_late, day.minutes_early, "Ya" if day.apel else "", day_remark(day),
                      " ".join(day.punches)]
            ws.append([nip, name, *(_plain(ws, v) for v in values)])


def day_remark(day: Day) -> str:
    if not day.working:
        return "Hari libur" if day.punches else ""
    if not day.punches:
        return "Tidak hadir"
    return ", ".join(t for t, on in (("Tidak absen masuk", day.missing_masuk),
                                     ("Tidak absen pulang", day.missing_pulang),
                                     ("Tidak ikut apel", day.apel_missed)) if on)


def _keterangan_sheet(wb, recap: Recap) -> None:
    ws = wb.create_sheet("Keterangan")
    ws.column_dimensions["A"].width = 28
    ws.column_dimensions["B"].width = 100
    cal = recap.calendar
    rows = [("Bulan", recap.month), ("Dihitung sampai", recap.until), ("Kalender", cal.source),
            ("Jumlah hari kerja", str(len(cal.working_days))),
            ("Hari libur", "; ".join(f"{d.isoformat()} {n}" for d, n in sorted(cal.days_off.items())) or "-"),
            ("Hari apel", str(len(cal.apel_days))),
            ("Apel ditiadakan", "; ".join(f"{d.isoformat()} {r}".strip() for d, r in
                                          sorted(cal.apel_cancelled.items())) or "-")]
    rows += [("Catatan", n) for n in recap.notes]
    rows += [("Aturan", r) for r in RULES]
    for title, value in rows:
        ws.append([_text(ws, title, bold=True), _plain(ws, value)])


# -- files -----------------------------------------------------------------------------------------------------


def save(recap: Recap, fmt: str, path: str | Path) -> None:
    """Write the recap as `fmt` ("csv" or "xlsx") to `path`, atomically. CSV files start with a UTF-8 BOM
    so that Excel reads names with accents right."""
    if fmt == "xlsx":
        write_xlsx(recap, path)
    elif fmt == "csv":
        _atomic(path, lambda tmp: Path(tmp).write_text(csv_text(recap), encoding="utf-8-sig", newline=""))
    else:
        raise ValueError(f"format {fmt!r}: use csv or xlsx")


def _atomic(path: str | Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o600)  # personal data: readable by its owner only, like the database
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
