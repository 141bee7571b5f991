"""After a roster install: the local enrolment stores follow the roster (terminal/punch/enrolments.py).

Templates enrolled here live in the local stores (face/templates.enc, the slot map's enrolments) so that the
employee can punch at once, before the central server has them. Once a roster carries a template, the local
copy is redundant; once the roster no longer lists an employee, their local templates must go too, or a
person removed at the central server could still punch here. The fingerprint slots follow with the next slot
sync (the daemon runs it on every roster change; by hand: `presensi finger sync`).

This is wiring: it joins the face store, the slot map (which needs the fingerprint driver package) and the
roster, which no core wing may import together.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from terminal.punch import enrolments, roster

log = logging.getLogger("presensi.roster")


def settle_local(state_dir) -> dict:
    """Forget local templates the installed roster carries or whose employee it no longer lists. Returns
    {"face": n dropped, "finger": n dropped}. A terminal without a roster (version 0) keeps everything."""
    with roster.Roster.open(state_dir) as r:
        if r.version == 0:
            return {"face": 0, "finger": 0}
        employees = r.employees()
    return {"face": _settle_faces(state_dir, employees), "finger": _settle_fingers(state_dir, employees)}


def _settle_faces(state_dir, employees: list[dict]) -> int:
    from terminal.face.store import TemplateStore

    store = TemplateStore(state_dir)
    local = store.load()
    drop = enrolments.settle(employees, local, "face")
    if not drop:
        return 0
    dropped = 0
    for employee, gone in drop.items():
        shas = {enrolments.template_sha256("face", t) for t in gone}
        kept = [t for t in local[employee] if enrolments.template_sha256("face", np.asarray(t)) not in shas]
        dropped += len(local[employee]) - len(kept)
        local[employee] = kept
    store.save(local)
    log.info("%d local face template(s) settled by the roster", dropped)
    return dropped


def _settle_fingers(state_dir, employees: list[dict]) -> int:
    from terminal.finger.slots import DB_FILE, SlotMap

    if not (Path(state_dir) / DB_FILE).exists():
        return 0
    with SlotMap(state_dir) as slots:
        pending = slots.enrolments()
        local: dict[str, list] = {}
        for e in pending:
            local.setdefault(e["employee"], []).append(e["template"])
        drop = enrolments.settle(employees, local, "finger")
        gone = {(emp, enrolments.template_sha256("finger", t)) for emp, ts in drop.items() for t in ts}
        ids = [e["id"] for e in pending if (e["employee"], enrolments.template_sha256("finger", e["template"])) in gone]
        slots.forget_enrolments(ids)
    return len(ids)
