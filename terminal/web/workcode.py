"""The kiosk's work-code touch: POST /kiosk/work-code, from the kiosk screen on the terminal itself.

Two answers share the route. Without a token, the touch is a choice *before* the punch: the code (checked
against [work_codes] codes) is armed for the next face or finger punch within before_punch_seconds, and
`{"code": null}` disarms it. With the token of an offer the kiosk showed after a recognised face or finger,
it is the choice for that punch, which is waiting for it (terminal/punch/workcodes.py says why), and `null`
records the punch without a code ("Lewati").

Only the terminal's own screen may choose (loopback without proxy headers, terminal/web/clients.py): a work
code is the employee's statement at the terminal, so neither a LAN host nor a logged-in admin elsewhere can
make one, and an offer's token is good for the one open offer only.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from terminal.punch import workcodes
from terminal.web import clients
from terminal.web.pages import json_response

log = logging.getLogger("presensi.web")

BODY_LIMIT = 1024
ERRORS = {403: {"description": "not the terminal's own screen"},
          409: {"description": "the code is unknown, does not apply, or the offer has ended (Bahasa Indonesia)"}}


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    code: int | None = Field(None, ge=0, le=255, description="the work code; null = none (disarm, or Lewati)")
    token: str | None = Field(None, min_length=8, max_length=64,
                              description="the token of the offer shown after a recognised face or finger")


def own_screen_only(request: Request) -> None:
    """Checked before the body is looked at: a LAN host learns nothing about what a valid choice is."""
    if not clients.is_local(request):
        raise HTTPException(403, "work codes are chosen on the terminal's own screen only")


def choose(daemon, request: Request, body: Choice) -> Response:
    own_screen_only(request)
    service = daemon.punches
    if body.token is not None:
        return _answer(service, body)
    return _arm(daemon, service, body.code)


def _answer(service, body: Choice) -> Response:
    window = service.choices
    refusal = window.choose(body.token, body.code) if window is not None else workcodes.Refusal(
        "Pilihan kode kerja sesudah presensi tidak dipakai di terminal ini",
        "no work-code offers are made here ([work_codes] after_punch_seconds = 0)")
    if refusal is not None:
        log.warning("kiosk work-code answer refused: %s", refusal.reason)
        raise HTTPException(409, refusal.message)
    return json_response({"ok": True, "code": body.code})


def _arm(daemon, service, code: int | None) -> Response:
    if code is None:
        service.chooser.clear()
        daemon.events.publish("workcode-armed", {"code": None})
        return json_response({"ok": True, "code": None})
    refusal = service.work_codes.known(code)
    if refusal is not None:
        log.warning("kiosk work code refused: %s", refusal.reason)
        raise HTTPException(409, refusal.message)
    service.chooser.arm(code, "kiosk")
    entry = service.work_codes.codes[code]
    armed = {"code": code, "label": entry.label, "seconds": service.chooser.seconds, "source": "kiosk"}
    daemon.events.publish("workcode-armed", armed)
    return json_response({"ok": True, **armed})
