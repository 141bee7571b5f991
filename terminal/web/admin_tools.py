"""Admin tools: the fault report (with a photo upload or a camera snapshot), enrolment from the camera,
offline export to a USB stick, the diagnostics bundle, and the health API. Each action is audited."""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
from pathlib import Path

from fastapi import APIRouter, HTTPException
from starlette.responses import Response

from terminal.log import punchlog, syncstate
from terminal.ops import faults
from terminal.web import diagnostics, forms, kiosk
from terminal.web.enrolment import EnrolError, Enrolments
from terminal.web.forms import form_body, json_or_form_body
from terminal.web.pages import esc, json_response, render

log = logging.getLogger("presensi.web")

USB_GLOBS = ("/media/*/*", "/media/*", "/run/media/*/*", "/mnt/*")


def health_report(daemon) -> dict:
    cfg = daemon.cfg
    parts = {}
    monitor = getattr(daemon, "health", None)
    for name, result in (getattr(monitor, "last", None) or {}).items():
        parts[name] = result.as_dict()
    with punchlog.PunchLog(cfg.state_dir) as plog:
        open_faults = faults.open_faults(plog.conn)
        sync = syncstate.summary(plog.conn, syncstate.target_of(cfg.central.url), plog.log_id)
    try:
        indicators = daemon.indicators()
    except Exception as e:  # still show the rest of the page
        indicators = {"error": str(e)}
    last = sync.get("last_contact_ns")
    return {"parts": parts, "open_faults": open_faults, "indicators": indicators, "sync": sync,
            "backlog": "-" if sync.get("backlog") is None else sync["backlog"],
            "last_contact": dt.datetime.fromtimestamp(last / 1e9, dt.UTC).isoformat(timespec="seconds")
            if last else ("tidak dipakai" if not cfg.central.url else "belum pernah")}


def usb_candidates() -> list[str]:
    found = []
    for pattern in USB_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.path.ismount(path) and os.access(path, os.W_OK) and path not in found:
                found.append(path)
    return found


class Tools:
    def __init__(self, admin, slots):
        self.admin, self.daemon, self.cfg, self.slots = admin, admin.daemon, admin.cfg, slots
        self.enrolments = Enrolments(self.daemon, admin.audit)
        diagnostics.ring_log()

    def register(self, router: APIRouter) -> None:
        page = self.admin.page
        binary = {200: {"description": "the file", "content": {"application/zip": {"schema": {
            "type": "string", "format": "binary"}}}}}
        jpeg = {200: {"description": "the camera's picture", "content": {"image/jpeg": {"schema": {
            "type": "string", "format": "binary"}}}},
            503: {"description": "the camera is not running", "content": {"application/json": {}}}}
        page(router, "GET", "/admin/faults", self.fault_page)
        page(router, "POST", "/admin/faults", self.fault_report, form_body(forms.MAX_FORM, multipart=True),
             {503: {"description": "the camera gave no picture", "content": {"application/json": {}}}})
        page(router, "GET", "/admin/enrol", self.enrol_page)
        page(router, "GET", "/admin/api/enrol", self.enrol_status)
        page(router, "POST", "/admin/api/enrol", self.enrol_start, json_or_form_body(forms.FORM_LIMIT))
        page(router, "POST", "/admin/api/enrol/cancel", self.enrol_cancel, json_or_form_body(forms.FORM_LIMIT))
        page(router, "GET", "/admin/export", self.export_page)
        page(router, "POST", "/admin/export", self.export, form_body(forms.FORM_LIMIT))
        page(router, "GET", "/admin/diagnostics.zip", self.diagnostics, responses=binary)
        page(router, "GET", "/admin/api/health", self.health)
        page(router, "GET", "/admin/api/snapshot.jpg", self.snapshot, responses=jpeg)

    def health(self, req, sess, form, files) -> Response:
        return json_response(health_report(self.daemon))

    def enrol_status(self, req, sess, form, files) -> Response:
        return json_response(self.enrolments.status())

    # -- faults ---------------------------------------------------------------------------------------

    def fault_page(self, req, sess, form, files, message: str = "", status_code: int = 200) -> Response:
        with punchlog.PunchLog(self.cfg.state_dir) as plog:
            recent = [e for e in faults.recent(plog.conn, 30) if e["event"] == "report"]
        options = "".join(f"<option value='{c}'>{c}</option>" for c in faults.CATEGORIES)
        rows = "".join(f"<tr><td>{e['id']}</td><td>{esc(e['category'])}</td><td>{esc(e['message'])}</td>"
                       f"<td>{'ada' if e['photo_sha256'] else '-'}</td></tr>" for e in reversed(recent)) \
            or "<tr><td colspan='4'>Belum ada laporan.</td></tr>"
        note = f"<p class='notice' role='status'>{esc(message)}</p>" if message else ""
        body = (f"<h1>Lapor kerusakan</h1>{note}<form method='post' action='/admin/faults' "
                "enctype='multipart/form-data' id='fault-form'>"
                f"<input type='hidden' name='csrf' value='{esc(sess.csrf)}'>"
                f"<label>Kategori <select name='category' required>{options}</select></label>"
                "<label>Keterangan (apa yang rusak, sejak kapan)<textarea name='message' required maxlength='2000'"
                " rows='4'></textarea></label>"
                "<label>Foto bukti kerusakan <input type='file' name='photo' accept='image/jpeg,image/png'></label>"
                "<label class='check'><input type='checkbox' name='use_camera' value='1'> atau ambil foto dari "
                "kamera terminal</label><button type='submit'>Kirim laporan</button></form>"
                "<h2>Laporan terakhir</h2><table id='reports'><tr><th>No</th><th>Kategori</th><th>Keterangan</th>"
                f"<th>Foto</th></tr>{rows}</table>")
        return self.admin.layout(sess, "Lapor kerusakan", body, status_code)

    def fault_report(self, req, sess, form, files) -> Response:
        photo = files.get("photo").data if files.get("photo") else None
        if photo is None and form.get("use_camera"):
            photo = kiosk.snapshot(self.daemon)
        try:
            with punchlog.PunchLog(self.cfg.state_dir) as plog:
                event = faults.report(plog.conn, self.cfg.state_dir, category=form.get("category", ""),
                                      message=form.get("message", ""), photo_jpeg=photo, reporter=sess.user)
        except faults.FaultError as e:
            return self.fault_page(req, sess, form, files, f"Laporan ditolak: {e}", 400)
        self.admin.audit(sess.user, "fault-report", {"id": event["id"], "category": event["category"],
                                                     "photo_sha256": event["photo_sha256"]})
        self._push_soon()
        where = "dikirim ke server pusat" if self.cfg.central.url else "disimpan di terminal (tanpa server pusat)"
        return self.fault_page(req, sess, form, files, f"Laporan no {event['id']} tersimpan dan akan {where}.")

    def _push_soon(self) -> None:
        """Run the push job now rather than at its next interval (it is idempotent and bounded)."""
        scheduler = getattr(self.daemon, "scheduler", None)
        if scheduler is None or not self.cfg.central.url:
            return
        try:
            scheduler.modify_job("push", next_run_time=dt.datetime.now(dt.UTC))
        except Exception as e:  # no push job (yet): the regular interval delivers it
            log.info("cannot schedule an immediate push: %s", e)

    # -- enrolment ------------------------------------------------------------------------------------

    def enrol_page(self, req, sess, form, files) -> Response:
        body = bytes(render("enrol.html").body).decode()  # a fragment: the live preview and the controls
        return self.admin.layout(sess, "Daftar wajah", body)

    def enrol_start(self, req, sess, form, files) -> Response:
        try:
            needed = int(form.get("needed") or 5)
            return json_response(self.enrolments.start(str(form.get("employee") or ""), needed, sess.user))
        except (EnrolError, ValueError, TypeError) as e:
            raise HTTPException(400, str(e)) from None

    def enrol_cancel(self, req, sess, form, files) -> Response:
        self.admin.audit(sess.user, "enrol-cancel", {})
        return json_response(self.enrolments.cancel())

    # -- export ---------------------------------------------------------------------------------------

    def export_page(self, req, sess, form, files, message: str = "", status_code: int = 200) -> Response:
        candidates = usb_candidates()
        listed = "".join(f"<li><code>{esc(p)}</code></li>" for p in candidates) or \
            "<li>Tidak ada flashdisk terdeteksi (/media, /mnt). Colokkan flashdisk lalu muat ulang.</li>"
        note = f"<p class='notice' role='status'>{esc(message)}</p>" if message else ""
        body = (f"<h1>Ekspor ke flashdisk</h1>{note}<p>Flashdisk terpasang:</p><ul>{listed}</ul>"
                "<form method='post' action='/admin/export' id='export-form'>"
                f"<input type='hidden' name='csrf' value='{esc(sess.csrf)}'>"
                f"<label>Folder tujuan <input name='path' required value='{esc(candidates[0] if candidates else '')}'>"
                "</label><label class='check'><input type='checkbox' name='all' value='1'> semua presensi (bukan "
                "hanya yang belum terkirim)</label><label class='check'><input type='checkbox' name='zk' value='1'> "
                "juga berkas ZKTeco (&lt;serial&gt;_attlog.dat) untuk sistem daerah</label>"
                "<button type='submit'>Ekspor</button></form>")
        return self.admin.layout(sess, "Ekspor", body, status_code)

    def export(self, req, sess, form, files) -> Response:
        target = Path(form.get("path") or "")
        if not target.is_absolute() or not target.is_dir():
            return self.export_page(req, sess, form, files, f"Folder {target} tidak ada; periksa flashdisk.", 400)
        try:
            result = self.daemon.export_offline(target, after_seq=0 if form.get("all") else None,
                                                zk_attlog=bool(form.get("zk")))
        except OSError as e:
            return self.export_page(req, sess, form, files, f"Ekspor gagal: {e.strerror or e}", 500)
        self.admin.audit(sess.user, "export", result)
        return self.export_page(req, sess, form, files, f"Ekspor selesai: {result['count']} presensi ke "
                                                        f"{result['dir']}. Flashdisk boleh dilepas.")

    # -- diagnostics, snapshot ------------------------------------------------------------------------

    def diagnostics(self, req, sess, form, files) -> Response:
        data = diagnostics.build(self.daemon, health_report(self.daemon))
        self.admin.audit(sess.user, "diagnostics-download", {"bytes": len(data)})
        name = f"presensi-diagnostics-{self.cfg.device.id}.zip"
        return Response(data, 200, {"Cache-Control": "no-store",
                                    "Content-Disposition": f"attachment; filename=\"{name}\""},
                        media_type="application/zip")

    def snapshot(self, req, sess, form, files) -> Response:
        return Response(kiosk.snapshot(self.daemon, boxes=True), 200, {"Cache-Control": "no-store"},
                        media_type="image/jpeg")
