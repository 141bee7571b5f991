"""Enrolment from the terminal's camera, started from the admin page: one employee at a time, frames from
the running camera through terminal.face.enrol.LiveEnrolment (one face, quality gate, varied templates),
with feedback the operator reads aloud to the employee; the templates are stored encrypted and the
face pipeline's gallery reloaded when enough were collected."""

from __future__ import annotations

import logging
import threading
import time

from terminal.face.enrol import EMPLOYEE_ID

log = logging.getLogger("presensi.web")

FEEDBACK = {  # LiveEnrolment's results, as the operator tells the employee
    "accepted": "Bagus — foto diterima",
    "no_face": "Wajah tidak terlihat — hadapkan wajah ke kamera",
    "several_faces": "Lebih dari satu wajah — hanya satu orang di depan kamera",
    "too_small": "Wajah terlalu kecil — mendekatlah ke kamera",
    "blurred": "Gambar buram — diam sebentar",
    "not_frontal": "Hadapkan wajah lurus ke kamera",
    "too_dark": "Terlalu gelap — tambah cahaya",
    "too_bright": "Terlalu terang — kurangi cahaya",
    "similar": "Gerakkan kepala sedikit atau ubah posisi untuk variasi",
    "inconsistent": "Wajah lain terdeteksi — pastikan hanya pegawai ini di depan kamera",
}
TIMEOUT_SECONDS = 90.0
MIN_NEEDED, MAX_NEEDED = 3, 10


class EnrolError(ValueError):
    pass


class EnrolmentJob:
    def __init__(self, daemon, employee: str, needed: int, on_finish):
        self.daemon, self.employee, self.needed, self.on_finish = daemon, employee, needed, on_finish
        self.state = "running"  # running | done | failed | cancelled
        self.message = "Mulai — hadapkan wajah ke kamera"
        self.counts: dict[str, int] = {}
        self.accepted = 0
        self.saved = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-enrol", daemon=True)

    def start(self) -> EnrolmentJob:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    def status(self) -> dict:
        return {"employee": self.employee, "state": self.state, "message": self.message, "accepted": self.accepted,
                "needed": self.needed, "saved": self.saved, "issues": dict(self.counts)}

    def _run(self) -> None:
        try:
            self._collect()
        except Exception as e:  # a model or camera problem ends this enrolment, never the daemon
            log.exception("enrolment failed")
            self.state, self.message = "failed", f"Gagal: {type(e).__name__}: {e}"
        finally:
            self.on_finish(self)

    def _collect(self) -> None:
        from terminal.face import detect, quality
        from terminal.face.enrol import LiveEnrolment

        worker = self.daemon.workers.get("face")
        if worker is None or worker.camera is None:
            self.state, self.message = "failed", "Kamera tidak berjalan"
            return
        cfg = self.daemon.cfg
        limits = quality.QualityLimits.from_config(cfg.face)
        session = LiveEnrolment(self.employee, detect.from_config(cfg.face), limits, needed=self.needed)
        seq, deadline = 0, time.monotonic() + TIMEOUT_SECONDS
        while not session.done:
            if self._stop.is_set():
                self.state, self.message = "cancelled", "Dibatalkan"
                return
            if time.monotonic() > deadline:
                self.state = "failed"
                self.message = f"Waktu habis: {self.accepted} dari {self.needed} foto diterima; ulangi"
                return
            frame = worker.camera.latest(after_seq=seq, timeout=0.5)
            if frame is None:
                continue
            seq = frame.seq
            result = session.feed(frame.image)
            self.counts[result] = self.counts.get(result, 0) + 1
            self.accepted = len(session.templates)
            self.message = FEEDBACK.get(result, result)
        self._save(session)

    def _save(self, session) -> None:
        from terminal.face.store import TemplateStore
        from terminal.punch import enrolments

        self.saved = session.save(TemplateStore(self.daemon.cfg.state_dir), replace=True)
        # for the central server, and from there every terminal's roster (sent with the next push)
        enrolments.record_in(self.daemon.cfg.state_dir, self.employee, "face", session.templates)
        worker = self.daemon.workers.get("face")
        if worker is not None:
            worker.reload_gallery()
        self.state = "done"
        self.message = f"Selesai — {self.saved} templat wajah tersimpan untuk {self.employee}"


class Enrolments:
    """At most one enrolment at a time; the last one's status stays readable."""

    def __init__(self, daemon, audit):
        self.daemon, self.audit = daemon, audit
        self.current: EnrolmentJob | None = None
        self._lock = threading.Lock()

    def start(self, employee: str, needed: int, actor: str) -> dict:
        employee = (employee or "").strip()
        if not EMPLOYEE_ID.match(employee):
            raise EnrolError("NIP tidak sah: 1-64 huruf, angka, '.', '_' atau '-'")
        if not MIN_NEEDED <= needed <= MAX_NEEDED:
            raise EnrolError(f"jumlah foto harus {MIN_NEEDED}-{MAX_NEEDED}")
        with self._lock:
            if self.current is not None and self.current.state == "running":
                raise EnrolError(f"pendaftaran {self.current.employee} masih berjalan; batalkan dulu")
            self.current = EnrolmentJob(self.daemon, employee, needed,
                                        lambda job: self.audit(actor, "enrol-face", job.status()))
            return self.current.start().status()

    def status(self) -> dict:
        job = self.current
        return job.status() if job else {"state": "idle", "message": "Belum ada pendaftaran"}

    def cancel(self) -> dict:
        job = self.current
        if job is not None:
            job.cancel()
        return self.status()
