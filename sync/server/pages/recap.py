"""BKPSDM's monthly recap page: one row per employee (days present, minutes late, minutes early, missing
masuk/pulang, apel attended and missed, work codes) for `/recap?month=YYYY-MM`, every figure a link to the
punches behind it (`/recap/punches`: the punch ids, times and kinds, each day also on the punches page), and
the same recap as CSV and XLSX downloads (`/recap.csv`, `/recap.xlsx`), audited.

What a figure means is sync/server/recap.py's (docs/recap.md); the files are sync/server/recapexport.py's.
This module only shows them, so the page, the files and `presensi server recap` can never disagree.

A whole month's recap takes tens of seconds at regency size (10,000 employees, 600,000 punches:
docs/recap.md), so the page never builds one: it lists whom the month has a row for (the roster and the
month's other punchers: recap.month_employees) and builds only the 200 rows it shows, and a figure's page only
its employee's row (an employee's row depends on nothing but their punches and the calendar, so it is the
same row the whole recap holds). Only the downloads need the whole month: each month's whole recap is kept for
CACHE_S seconds and built once however many downloads ask for it meanwhile."""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from .. import accounts, recap, recapexport
from .base import SECURITY_HEADERS, client, one_problem, render, require_role, settings
from .punches import KIND_LABELS

Clerk = Annotated[accounts.Session, Depends(require_role("bkpsdm"))]
PAGE_SIZE = 200  # employees per page: a regency has 10,000
MONTH = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
CACHE_S = 120.0  # how long a whole month's recap serves downloads before it is computed again
CACHE_MONTHS = 2  # a month of 10,000 employees holds every punch id: keep few, and none past CACHE_S

# the figures of a row, in the page's order, with their column titles (the files' headers)
SHOWN = ("days_present", "days_absent", "minutes_late", "minutes_early", "missing_masuk", "missing_pulang",
         "apel_attended", "apel_missed", "days_off_worked", "unverified", "excluded")
TITLES = {**recapexport.HEADERS, "work_codes": "Kode kerja"}
MEDIA = {"csv": "text/csv; charset=utf-8",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


class Month(BaseModel):
    model_config = ConfigDict(extra="ignore")
    month: str = Field(default="", pattern=r"^([0-9]{4}-(0[1-9]|1[0-2]))?$")
    employee: str = Field(default="", max_length=64, pattern=r"^[^\u0000]*$")
    page: int = Field(default=1, ge=1, le=10_000)


class Figure(BaseModel):
    model_config = ConfigDict(extra="ignore")
    month: str = Field(pattern=MONTH)
    employee: str = Field(min_length=1, max_length=64, pattern=r"^[^\u0000]*$")
    figure: str = Field(max_length=80, pattern=r"^([a-z_]+|work_code:[^\u0000]{1,40})$")


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)
    r.add_api_route("/recap", recap_page, methods=["GET"])
    r.add_api_route("/recap/punches", figure_page, methods=["GET"])
    r.add_api_route("/recap.csv", recap_csv, methods=["GET"])
    r.add_api_route("/recap.xlsx", recap_xlsx, methods=["GET"])
    return r


def _checked(model: type[BaseModel], request: Request) -> BaseModel:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as e:
        raise HTTPException(400, one_problem(e)) from None


def this_month(request: Request) -> str:
    return dt.datetime.now(ZoneInfo(settings(request).timezone)).strftime("%Y-%m")


class Cache:
    """Recaps by month, each computed once per CACHE_S (one lock per month: concurrent requests wait for the
    one build instead of starting their own)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.months: dict[str, tuple[float, recap.Recap]] = {}
        self.building: dict[str, threading.Lock] = {}

    def get(self, store, month: str) -> tuple[float, recap.Recap]:
        with self.lock:
            month_lock = self.building.setdefault(month, threading.Lock())
        with month_lock:
            hit = self.months.get(month)
            if hit and time.monotonic() - hit[0] < CACHE_S and hit[1].until == _today(hit[1]):
                return hit
            with self.lock:  # let go of what is stale before the new month takes its memory
                self.months.pop(month, None)
                self._expire()
            built = recap.build(store, month)
            made = (time.monotonic(), built)  # its age counts from when it was ready: a build may outlast CACHE_S
            with self.lock:
                self.months[month] = made
                self._expire()
                for old in sorted(self.months, key=lambda m: self.months[m][0])[:-CACHE_MONTHS]:
                    del self.months[old]
            return made

    def _expire(self) -> None:
        now = time.monotonic()
        for m in [m for m, (made, _) in self.months.items() if now - made >= CACHE_S]:
            del self.months[m]


def _today(r: recap.Recap) -> str:
    """The `until` a build now would give (a cached recap of a running month is stale at midnight)."""
    return min(dt.date.today(), r.calendar.last).isoformat()


def _refused(e: recap.RecapError) -> HTTPException:
    # the detail (English, as the command line says it) names what is wrong
    return HTTPException(409, "Rekap tidak dapat dibuat: kalender atau daftar pegawai yang diterbitkan tidak "
                              f"dapat dibaca; terbitkan ulang dengan `presensi server publish-roster` ({e})")


def build(request: Request, month: str) -> recap.Recap:
    """The whole month (for the downloads), from the cache."""
    state = request.app.state
    if not hasattr(state, "recaps"):
        state.recaps = Cache()
    try:
        return state.recaps.get(request.app.store, month)[1]
    except recap.RecapError as e:
        raise _refused(e) from None


def build_rows(request: Request, month: str, employees: list[str], roster: tuple) -> recap.Recap:
    """The recap of `month` for these employees only (a page of rows, or one employee's)."""
    try:
        return recap.build(request.app.store, month, employees=employees, roster=roster)
    except recap.RecapError as e:
        raise _refused(e) from None


def month_employees(request: Request, month: str) -> tuple[list[str], tuple]:
    """Whom the month has a row for, and the published roster read for it (build_rows takes it again)."""
    try:
        roster = recap.published_roster(request.app.store)
        return recap.month_employees(request.app.store, month, roster), roster
    except recap.RecapError as e:
        raise _refused(e) from None


# -- the page -------------------------------------------------------------------------------------------------

def recap_page(request: Request, sess: Clerk) -> Response:
    q = _checked(Month, request)
    month = q.month or this_month(request)
    everyone, roster = month_employees(request, month)
    wanted = [e for e in everyone if not q.employee or e == q.employee.strip()]
    start = (q.page - 1) * PAGE_SIZE
    result = build_rows(request, month, wanted[start:start + PAGE_SIZE], roster)
    return render(request, "recap.html", r=result, rows=result.employees, q=q, month=month,
                  more=len(wanted) > start + PAGE_SIZE, total=len(wanted), shown=SHOWN, titles=TITLES,
                  link=lambda e, figure: _figure_link(month, e, figure), codes=recapexport.work_codes_text,
                  notes=notes(result))


def notes(r: recap.Recap) -> list[str]:
    """What BKPSDM should know about this recap, in Bahasa Indonesia (recap.build's notes say the same in
    English for the command line)."""
    out = []
    if not r.calendar.source.startswith("roster"):
        out.append("Belum ada daftar pegawai (roster) yang diterbitkan: hari kerja dihitung Senin–Jumat tanpa hari "
                   "libur, dan pegawai tanpa presensi tidak tercantum. Terbitkan roster beserta hari liburnya.")
    if r.undated:
        out.append(f"{r.undated} presensi tersimpan tanpa tanggal setempat dan tidak masuk rekap bulan mana pun.")
    if r.until < r.calendar.last.isoformat():
        out.append(f"Bulan ini belum berakhir: hari kerja dihitung sampai {r.until}.")
    return out


def _figure_link(month: str, employee: str, figure: str) -> str:
    return (f"/recap/punches?month={quote(month)}&employee={quote(employee, safe='')}"
            f"&figure={quote(figure, safe='')}")


def figure_page(request: Request, sess: Clerk) -> Response:
    """The punches (and days) behind one figure of one employee's month."""
    q = _checked(Figure, request)
    if q.figure not in recap.FIGURES and not q.figure.startswith("work_code:"):
        raise HTTPException(400, f"Isian 'figure' tidak valid: {q.figure!r} bukan angka rekap")
    everyone, roster = month_employees(request, q.month)
    if q.employee not in everyone:
        raise HTTPException(404, "Pegawai itu tidak ada dalam rekap bulan ini")
    row = build_rows(request, q.month, [q.employee], roster).employees[0]
    ids = row.punches.get(q.figure, [])
    first, last = recap.month_bounds(q.month)
    stored = {recap.punch_id(p["device_id"], p["log_id"], p["seq"]): p
              for p in request.app.store.punches_of_employee(row.employee, first.isoformat(), last.isoformat())}
    punches = [_punch(pid, stored.get(pid)) for pid in ids]
    title = TITLES.get(q.figure) or ("Kode kerja " + q.figure.split(":", 1)[1])
    return render(request, "recap_punches.html", row=row, month=q.month, figure=q.figure, figure_title=title,
                  value=getattr(row, q.figure, len(ids)), punches=punches,
                  dates=row.dates.get(q.figure, []), kinds=KIND_LABELS,
                  back=f"/recap?month={quote(q.month)}&employee={quote(row.employee, safe='')}")


def _punch(pid: str, p: dict | None) -> dict:
    device, _, seq = recap.parse_punch_id(pid)
    d = (p or {}).get("derived") or {}
    return {"id": pid, "device_id": device, "seq": seq, "date": d.get("local_date") or "",
            "time": d.get("local_time") or "", "kind": d.get("kind") or (p or {}).get("kind") or "",
            "late": d.get("minutes_late") or 0, "early": d.get("minutes_early") or 0,
            "employee": (p or {}).get("employee") or ""}


# -- the files ------------------------------------------------------------------------------------------------

def recap_csv(request: Request, sess: Clerk) -> Response:
    return download(request, sess, "csv")


def recap_xlsx(request: Request, sess: Clerk) -> Response:
    return download(request, sess, "xlsx")


def download(request: Request, sess: accounts.Session, fmt: str) -> Response:
    q = _checked(Month, request)
    month = q.month or this_month(request)
    result = build(request, month)
    with tempfile.TemporaryDirectory(prefix="presensi-recap-") as tmp:
        path = Path(tmp) / f"rekap-{month}.{fmt}"
        recapexport.save(result, fmt, path)
        data = path.read_bytes()
    accounts.audit(request.app.store, sess.username, f"recap-{fmt}", month,
                   {"employees": len(result.employees), "bytes": len(data)}, client(request))
    return Response(data, 200, {**SECURITY_HEADERS,
                                "Content-Disposition": f'attachment; filename="rekap-{month}.{fmt}"'},
                    media_type=MEDIA[fmt])
