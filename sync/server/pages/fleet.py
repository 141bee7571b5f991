"""Diskominfo's pages: the fleet (every terminal's last contact, parts, open faults, backlog, versions),
one device (its faults with photo evidence and diagnostics, alarms, time samples), a fault's photo
(decrypted from the at-rest store, sync/server/atrest.py) and acknowledging or closing a fault. What the
numbers mean comes from sync/server/fleet.py; this module only shows them."""

from __future__ import annotations

import json
import time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import accounts, display, fleet
from .base import SECURITY_HEADERS, Posted, client, form_route, redirect, render, require_role, settings

Staff = Annotated[accounts.Session, Depends(require_role("diskominfo"))]
DeviceId = Annotated[str, Path(max_length=128, pattern=r"^[^\u0000/]+$")]
EventId = Annotated[int, Path(ge=-(2**62), le=2**62)]

PART_LABELS = {"camera": "Kamera", "fingerprint": "Sidik jari", "clock": "Jam", "disk": "Penyimpanan",
               "database": "Basis data", "roster": "Daftar pegawai"}
STATE_LABELS = {"open": "terbuka", "acknowledged": "sedang ditangani", "closed": "ditutup",
                "cleared": "pulih sendiri"}
ACTION_DONE = {"acknowledge": "Kerusakan ditandai sedang ditangani.", "close": "Kerusakan ditutup."}
ACTION_REFUSED = {"unknown": "Kerusakan itu tidak ada.", "closed": "Kerusakan itu sudah ditutup.",
                  "acknowledged": "Kerusakan itu sudah ditandai sedang ditangani."}


class FaultAction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    csrf: str
    note: str = Field(default="", max_length=1000, pattern=r"^[^\u0000]*$")


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)
    r.add_api_route("/fleet", fleet_page, methods=["GET"])
    r.add_api_route("/devices/{device_id}", device_page, methods=["GET"])
    r.add_api_route("/faults/{device_id}/{event_id}/photo", fault_photo, methods=["GET"])
    for action in fleet.ACTIONS:
        r.add_api_route(f"/faults/{{device_id}}/{{event_id}}/{action}", _acting(action), methods=["POST"],
                        openapi_extra=form_route(), name=f"fault_{action}")
    return r


def fleet_page(request: Request, sess: Staff) -> Response:
    s = settings(request)
    rows = fleet.overview(request.app.store, s.silent_after_s)
    return render(request, "fleet.html", rows=rows, labels=PART_LABELS, silent_after_s=s.silent_after_s,
                  silent=sum(1 for r in rows if r["silent"]),
                  faulty=sum(1 for r in rows if r["open_faults"]))


def device_page(request: Request, sess: Staff, device_id: DeviceId, done: str = "") -> Response:
    store, s = request.app.store, settings(request)
    row = next(iter(fleet.overview(store, s.silent_after_s, device_id=device_id)), None)
    if row is None:
        raise HTTPException(404, "Perangkat itu tidak terdaftar")
    faults = fleet.faults(store, device_id, limit=200)
    for f in faults:
        f["diagnostics_text"] = display.safe(json.dumps(f["diagnostics"], ensure_ascii=False, indent=1), 4000) \
            if f["diagnostics"] not in (None, {}, "") else ""
    return render(request, "device.html", d=row, faults=faults, labels=PART_LABELS, states=STATE_LABELS,
                  alarms=store.alarms(device_id, limit=100), samples=store.time_samples(device_id)[-50:],
                  clock=fleet.part_detail(row["heartbeat"], "clock"), csrf=sess.csrf,
                  notice=ACTION_DONE.get(done, ""))


def fault_photo(request: Request, sess: Staff, device_id: DeviceId, event_id: EventId) -> Response:
    """The photo a fault report carries, only for Diskominfo and the admin (never a punch's photo)."""
    store = request.app.store
    f = fleet.fault(store, device_id, event_id)
    data = store.photo(f["photo_sha256"]) if f and f.get("photo_sha256") else None
    if data is None:
        raise HTTPException(404, "Foto kerusakan itu tidak ada (belum terkirim dari terminal, atau tidak pernah ada)")
    accounts.audit(store, sess.username, "fault-photo-viewed", f"{device_id}/{event_id}", {}, client(request))
    media = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" \
        else "application/octet-stream"
    return Response(data, 200, {**SECURITY_HEADERS, "Content-Security-Policy": "default-src 'none'",
                                "Content-Disposition": "inline"}, media_type=media)


def _acting(action: str):
    async def act(request: Request, sess: Staff, device_id: DeviceId, event_id: EventId,
                  form: Annotated[FaultAction, Depends(Posted(FaultAction))]) -> Response:
        store = request.app.store
        outcome = await run_in_threadpool(fleet.act, store, device_id, event_id, action, sess.username,
                                          form.note.strip())
        if outcome != "done":
            raise HTTPException(404 if outcome == "unknown" else 409, ACTION_REFUSED[outcome])
        await run_in_threadpool(accounts.audit, store, sess.username, f"fault-{action}", f"{device_id}/{event_id}",
                                {"note": form.note.strip()[:1000], "at_ns": time.time_ns()}, client(request))
        return redirect(f"/devices/{quote(device_id, safe='')}?done={action}#fault-{event_id}")
    act.__name__ = f"fault_{action}"
    return act
