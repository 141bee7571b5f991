"""The daemon's hardware loops: camera → face pipeline, and fingerprint sensor → capture loop.

Each loop owns its device, reports its health as a plain dict for the health monitor, beats a heartbeat
for the systemd watchdog, and turns accepted identifications into punches through the PunchService.
Devices that are missing or broken degrade the terminal instead of stopping it: the drivers reconnect by
themselves, and the loop keeps running. Any exception of one attempt (deciding, punching, feedback) goes
to `on_failure` (the daemon: "Gagal, silakan ulangi", the failure beep, a fault) and the loop goes on with
the next frame or finger; a loop that stops beating anyway is restarted by the daemon.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from terminal.app.events import EventBus
from terminal.config import Config
from terminal.punch.service import PunchService

log = logging.getLogger("presensi.workers")

UNKNOWN_FACE = "Wajah tidak dikenali — silakan gunakan sidik jari"
UNKNOWN_FINGER = "Sidik jari tidak dikenali — silakan coba lagi"
SPOOF_REFUSED = "Verifikasi wajah gagal — silakan gunakan sidik jari"


class FaceWorker:
    """Reads the newest camera frame, runs the pipeline, punches accepted faces."""

    def __init__(self, cfg: Config, service: PunchService, events: EventBus, heartbeat=None,
                 on_failure: Callable[[Exception], None] | None = None):
        self.cfg, self.service, self.events, self.heartbeat = cfg, service, events, heartbeat
        self.on_failure = on_failure
        self.camera = None
        self.pipeline = None
        self.decisions = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> FaceWorker:
        from drivers import camera as camera_mod
        from terminal.face import build_pipeline

        c = self.cfg.camera
        self.camera = camera_mod.from_settings(c.source, c.width, c.height, c.fps, c.stall_seconds, kind=c.kind,
                                                 options=c.source_options())
        self.pipeline = build_pipeline(self.cfg, liveness=_liveness(self.cfg, self.service.log))
        self.camera.start()
        self._thread = threading.Thread(target=self._run, name="face-worker", daemon=True)
        self._thread.start()
        return self

    def reload_gallery(self) -> None:
        from terminal.face import store

        if self.pipeline is not None:
            self.pipeline.set_gallery(store.TemplateStore(self.cfg.state_dir).gallery())

    def _run(self) -> None:
        seq, prompt = 0, None
        while not self._stop.is_set():
            if self.heartbeat:
                self.heartbeat.beat()
            try:
                frame = self.camera.latest(after_seq=seq, timeout=0.5)
                if frame is None:
                    continue
                seq = frame.seq
                decisions = self.pipeline.process(frame.image, frame.t)
                if self.pipeline.prompt != prompt:
                    prompt = self.pipeline.prompt
                    self.events.publish("prompt", {"text": prompt})
            except Exception as e:  # one bad frame must not stop face punching
                self._failed("the face pipeline failed on a frame", e)
                continue
            for decision in decisions:
                try:
                    self._handle(decision)
                except Exception as e:  # deciding, punching or feedback: this attempt fails, not the worker
                    self._failed("a face decision failed", e)

    def _failed(self, what: str, error: Exception) -> None:
        log.exception("%s", what)
        self.failures += 1
        self.error = f"{type(error).__name__}: {error}"
        if self.on_failure is not None:
            try:
                self.on_failure(error)
            except Exception:
                log.exception("reporting the face worker's failure failed")

    def _handle(self, decision) -> None:
        self.decisions += 1
        line = decision.as_json()
        if not decision.accepted:
            message = SPOOF_REFUSED if decision.reason.startswith("liveness") else UNKNOWN_FACE
            self.events.publish("decision", {"accepted": False, "method": "face", "message": message,
                                             "reason": decision.reason})
            return
        details = {**decision.scores(), "frames": line["frames"], "ms": line["ms"], "liveness": line["liveness"],
                   "threshold": self.cfg.face.threshold, "margin_required": self.cfg.face.margin}
        self.service.punch(decision.employee, "face", details=details, photo_jpeg=decision.best_frame_jpeg())

    def health(self) -> dict:
        if self.camera is None:
            return {"ok": False, "error": "camera not started"}
        report = self.camera.health()
        if self.error:
            report["last_pipeline_error"] = self.error
            report["failures"] = self.failures
        return report

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self.camera:
            self.camera.stop(timeout=3)
        if self.pipeline:
            self.pipeline.close()


def start_fingerprint(cfg: Config, service: PunchService, events: EventBus, feedback=None, *, heartbeat=None,
                      on_failure: Callable[[Exception], None] | None = None):
    """The sensor's capture loop in its own thread (terminal/finger/service.py); unknown fingers are shown
    on the screen and get the failure pattern (accepted ones get feedback from the PunchService); a failed
    attempt goes to `on_failure`."""
    from terminal.finger.service import FingerprintService

    def show(decision) -> None:
        if decision.accepted:
            return
        events.publish("decision", {"accepted": False, "method": "finger", "message": UNKNOWN_FINGER,
                                    "reason": decision.reason})  # first: a broken buzzer must not hide it
        if feedback is not None:
            feedback.failure()

    finger = FingerprintService(cfg.fingerprint, cfg.state_dir, service, on_decision=show, on_error=on_failure,
                                heartbeat=heartbeat.beat if heartbeat is not None else None)
    finger.start()
    return finger


def _liveness(cfg: Config, punch_log):
    """The configured presentation-attack checks; refused attempts go to the audit table (no image)."""
    if cfg.liveness.mode == "off":
        from terminal.liveness.off import OffLiveness

        return OffLiveness()
    from terminal.liveness import audit_refusals, from_config

    return from_config(cfg.liveness, on_refused=audit_refusals(punch_log))
