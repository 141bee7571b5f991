"""The admin page's apel cancellation: an operator cancels apel pagi for a date at this terminal (when the
central server has not, or the terminal is offline). The kiosk then says "Apel pagi hari ini ditiadakan" and
a punch in the apel window is classified among the day's other windows (terminal/punch/rules.py). Kept in
the punch database (terminal/punch/notices.py), audited; the central server's cancellations come in the
roster and are listed here too."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException
from starlette.responses import Response

from terminal.log import punchlog
from terminal.punch import notices
from terminal.punch import roster as roster_mod
from terminal.web import forms
from terminal.web.forms import form_body
from terminal.web.pages import esc


class ApelPage:
    def __init__(self, admin):
        self.admin, self.daemon, self.cfg = admin, admin.daemon, admin.cfg

    def register(self, router: APIRouter) -> None:
        self.admin.page(router, "GET", "/admin/apel", self.page)
        self.admin.page(router, "POST", "/admin/apel", self.change, form_body(forms.FORM_LIMIT))

    def page(self, req, sess, form, files, message: str = "") -> Response:
        with punchlog.PunchLog(self.cfg.state_dir) as plog:
            local = notices.local_apel_cancellations(plog.conn)
        with roster_mod.Roster.open(self.cfg.state_dir) as r:
            central = r.apel_cancelled()
        rows = "".join(f"<tr><td>{esc(c['date'])}</td><td>{esc(c['reason'])}</td><td>terminal ini "
                       f"({esc(c['actor'])})</td></tr>" for c in local)
        rows += "".join(f"<tr><td>{esc(c['date'])}</td><td>{esc(c['reason'])}</td><td>server pusat</td></tr>"
                        for c in central)
        note = f"<p class='notice' role='status'>{esc(message)}</p>" if message else ""
        csrf = f"<input type='hidden' name='csrf' value='{esc(sess.csrf)}'>"
        body = (f"<h1>Apel pagi</h1>{note}<form method='post' action='/admin/apel' class='inline'>{csrf}"
                "<label>Tanggal <input type='date' name='date' required></label>"
                "<label>Alasan <input name='reason' maxlength='300'></label>"
                "<button type='submit' name='action' value='cancel'>Tiadakan apel</button>"
                "<button type='submit' name='action' value='restore'>Batalkan peniadaan</button></form>"
                "<p>Presensi pada jam apel di hari yang ditiadakan dicatat sebagai presensi masuk biasa, "
                "tanpa keterlambatan apel.</p><table id='apel'><tr><th>Tanggal</th><th>Alasan</th>"
                f"<th>Oleh</th></tr>{rows or '<tr><td colspan=3>Tidak ada apel yang ditiadakan.</td></tr>'}"
                "</table>")
        return self.admin.layout(sess, "Apel", body)

    def change(self, req, sess, form, files) -> Response:
        date, action = (form.get("date") or "").strip(), form.get("action") or "cancel"
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise HTTPException(400, "date: use YYYY-MM-DD") from None
        if action not in ("cancel", "restore"):
            raise HTTPException(400, "action: cancel or restore")
        reason = (form.get("reason") or "").strip()[:300]
        with punchlog.PunchLog(self.cfg.state_dir) as plog:
            if action == "cancel":
                notices.cancel_apel(plog.conn, date, reason, sess.user)
            else:
                notices.restore_apel(plog.conn, date)
        self.daemon.punches.reload_schedule()  # from the next punch on
        self.admin.audit(sess.user, f"apel-{action}", {"date": date, "reason": reason})
        message = f"Apel pagi {date} ditiadakan" if action == "cancel" else f"Apel pagi {date} diadakan kembali"
        return self.page(req, sess, form, files, message=message)
