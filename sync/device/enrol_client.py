"""Sending the enrolments made at this terminal to the central server, which adds them to the employees'
templates and publishes the next roster to every terminal (sync/server/enrolments.py).

    POST {central.url}/api/v1/devices/{device_id}/enrolments     (token + device signature, sync/wire/signed.py)
    {"enrolments": [{"ref", "employee", "modality": "face"|"finger", "sealed": base64, "created_ns"}]}
    200 → {"results": [{"ref", "status": accepted|pending|duplicate|refused, "reason"}], "roster_version"}

The outbox is terminal/punch/enrolments.py's table; an answered enrolment is not sent again. A refused one
(say, an employee the server's roster does not list) stays refused, with the server's reason, for IT staff
(`presensi sync status`). Each template is sealed to the server's enrolment key, which came in the signed
roster (sync/wire/sealedtemplate.py), and bound to this device, the employee and the modality; the request
goes through the one client of sync/device/central.py, so it is signed by the device key like every upload.
The server keeps the templates encrypted at rest.
"""

from __future__ import annotations

import logging

from sync.device import central
from sync.wire import sealedtemplate
from terminal.punch import enrolments, roster

log = logging.getLogger("presensi.enrolments")
PATH = "/enrolments"
BATCH = 50


def _server_key(state_dir) -> str:
    """The server's enrolment key from the installed (signed) roster; without it nothing is sent."""
    with roster.Roster.open(state_dir) as r:
        key = r.enrolment_key()
    if not key:
        raise central.ConfigError("the installed roster carries no enrolment key of the central server, so "
                                  "enrolments cannot be sealed for it: run `presensi roster pull` first (an "
                                  "older central server does not take enrolments)")
    return key


def upload(client: central.Client, conn, state_dir) -> dict:
    """Send every unanswered enrolment; returns {"sent", "accepted", "pending", "duplicate", "refused",
    "roster_version"}. Raises central.CentralError when the server cannot be reached or refuses the request
    (nothing is marked then: the next run sends the same enrolments again)."""
    totals = {"sent": 0, **{k: 0 for k in enrolments.SENT_OUTCOMES}, "roster_version": None}
    while True:
        batch = enrolments.unsent(conn, state_dir, BATCH)
        if not batch:
            return totals
        key, device = _server_key(state_dir), client.s.device_id
        body = {"enrolments": [{"ref": e["ref"], "employee": e["employee"], "modality": e["modality"],
                                "sealed": sealedtemplate.seal(key, e["template"], sealedtemplate.aad(
                                    device, e["employee"], e["modality"])),
                                "created_ns": e["created_ns"]} for e in batch]}
        answer = client.post_json(client.device_path(PATH), body)
        results = {r.get("ref"): r for r in answer.get("results") or [] if isinstance(r, dict)}
        for e in batch:
            r = results.get(e["ref"])
            if r is None or r.get("status") not in enrolments.SENT_OUTCOMES:
                raise central.TransientError(f"the central server did not answer enrolment {e['ref']}; retry later")
            enrolments.answer(conn, e["ref"], r["status"], r.get("reason"))
            totals[r["status"]] += 1
            if r["status"] == "refused":
                log.warning("enrolment of %s refused by the central server: %s", e["employee"], r.get("reason"))
        totals["sent"] += len(batch)
        totals["roster_version"] = answer.get("roster_version") or totals["roster_version"]
