"""BKPSDM's punches page: punches per device, employee and day, with kind, lateness, work code and flags
(time not verified, to be reviewed, alarms), fifty to a page. Filters are bound parameters of one query
(never text in the SQL) and checked by a pydantic model first; the indexes it reads are created here."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from .. import accounts
from ..storage import Store
from .base import one_problem, render, require_role

Clerk = Annotated[accounts.Session, Depends(require_role("bkpsdm"))]
PAGE_SIZE = 50
MAX_PAGE = 100_000

INDEXES = """
CREATE INDEX IF NOT EXISTS punches_by_employee ON punches (employee, realtime_ns);
CREATE INDEX IF NOT EXISTS punches_by_device_time ON punches (device_id, realtime_ns);
CREATE INDEX IF NOT EXISTS punches_by_time ON punches (realtime_ns);
CREATE INDEX IF NOT EXISTS punch_derived_by_day ON punch_derived (local_date);
CREATE INDEX IF NOT EXISTS alarms_by_record ON alarms (device_id, log_id, seq);
"""

KIND_LABELS = {"masuk": "Masuk", "pulang": "Pulang", "istirahat": "Istirahat", "apel": "Apel"}
PROBLEM_LABELS = {"edited": "diubah di terminal", "broken-link": "rantai terputus", "wrong-log": "log lain",
                  "conflict": "versi lain"}


class Filters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    device: str = Field(default="", max_length=128, pattern=r"^[^\u0000]*$")
    employee: str = Field(default="", max_length=64, pattern=r"^[^\u0000]*$")
    day: str = Field(default="", pattern=r"^([0-9]{4}-[0-9]{2}-[0-9]{2})?$")
    page: int = Field(default=1, ge=1, le=MAX_PAGE)


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)
    r.add_api_route("/punches", punches_page, methods=["GET"])
    return r


def ensure_indexes(store: Store) -> None:
    if not getattr(store, "punch_indexes_ready", False):
        store.run_ddl(INDEXES)
        store.punch_indexes_ready = True  # type: ignore[attr-defined]


def punches_page(request: Request, sess: Clerk) -> Response:
    try:
        f = Filters.model_validate(dict(request.query_params))
    except ValidationError as e:
        raise HTTPException(400, one_problem(e)) from None
    store = request.app.store
    ensure_indexes(store)
    rows = [_row(r) for r in query(store, f)]
    more = len(rows) > PAGE_SIZE
    devices = [d["device_id"] for d in store.query("SELECT device_id FROM devices ORDER BY device_id")]
    return render(request, "punches.html", rows=rows[:PAGE_SIZE], more=more, f=f, devices=devices,
                  kinds=KIND_LABELS)


def query(store: Store, f: Filters) -> list[dict]:
    """One page (plus one row, to know whether another follows) of punches matching the filters."""
    where, args = [], []
    if f.device:
        where.append("p.device_id = ?")
        args.append(f.device)
    if f.employee:
        where.append("p.employee = ?")
        args.append(f.employee.strip())
    if f.day:
        where.append("(d.local_date = ? OR (d.local_date IS NULL AND substr(p.utc, 1, 10) = ?))")
        args += [f.day, f.day]
    sql = ("SELECT p.*, d.kind AS d_kind, d.minutes_late AS d_minutes_late, d.minutes_early AS d_minutes_early, "
           "d.local_date AS d_local_date, d.local_time AS d_local_time, d.time_verified AS d_time_verified, "
           "(SELECT count(*) FROM alarms a WHERE a.device_id = p.device_id AND a.log_id = p.log_id "
           "AND a.seq = p.seq) AS alarm_count "
           "FROM punches p LEFT JOIN punch_derived d ON d.device_id = p.device_id AND d.log_id = p.log_id "
           "AND d.seq = p.seq" + (" WHERE " + " AND ".join(where) if where else "") +
           " ORDER BY p.realtime_ns DESC, p.device_id, p.seq DESC LIMIT ? OFFSET ?")
    return store.query(sql, (*args, PAGE_SIZE + 1, (f.page - 1) * PAGE_SIZE))


def _json(text, default):
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return default
    return value if value is not None else default


def _row(r: dict) -> dict:
    details = _json(r.get("details"), {})
    details = details if isinstance(details, dict) else {}
    flags = _json(r.get("flags"), [])
    problems = _json(r.get("problems"), [])
    unverified = r.get("d_time_verified") in (0, False) or "no-time-sample" in flags or (
        r.get("d_time_verified") is None and r.get("basis") in (None, "wall-clock", "none"))
    marks = []
    if unverified:
        marks.append(("warn", "waktu belum terverifikasi"))
    if "review" in flags:
        marks.append(("warn", "perlu ditinjau"))
    for p in problems if isinstance(problems, list) else []:
        marks.append(("bad", PROBLEM_LABELS.get(p, str(p))))
    if r.get("alarm_count"):
        marks.append(("bad", f"alarm ({r['alarm_count']})"))
    kind = r.get("d_kind") or r.get("kind") or ""
    when = f"{r['d_local_date']} {r['d_local_time'] or ''}".strip() if r.get("d_local_date") else (
        (r.get("utc") or "")[:19].replace("T", " ") + " UTC" if r.get("utc") else "-")
    return {"device_id": r["device_id"], "seq": r["seq"], "employee": r.get("employee"), "method": r.get("method"),
            "kind": kind, "when": when, "late": r.get("d_minutes_late") or details.get("minutes_late") or 0,
            "early": r.get("d_minutes_early") or 0,
            "work_code": r.get("work_code") or details.get("work_code") or "", "marks": marks}
