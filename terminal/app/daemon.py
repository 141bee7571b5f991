"""`presensi run`: one lifecycle for every part of the terminal.

`Daemon.run()` reads as the table of contents: open and check the log, start feedback, the punch service,
the hardware workers, the network services and health, the periodic jobs; tell systemd READY; then wait
for SIGTERM. One stop event reaches every loop. A missing or broken device degrades the terminal (face
only, fingerprint only, PIN only) and is retried; it never stops the daemon. A punch log that cannot be
opened for lack of space starts the daemon degraded: the kiosk says punches are refused, a fault is raised,
heartbeats go out, and punching resumes when space returns (terminal/app/supervise.py). A worker whose
attempt fails gives feedback and a fault and goes on; a worker that stops beating is restarted.
"""

from __future__ import annotations

import functools
import logging
import shutil
import signal
import threading
import time

from terminal.app import sdnotify
from terminal.app.events import EventBus
from terminal.app.jobs import JobContext, schedule_jobs
from terminal.app.supervise import FAILED_MESSAGE, FaultBook, LogGate
from terminal.config import Config
from terminal.log import punchlog
from terminal.punch.service import PunchOutcome, PunchService

log = logging.getLogger("presensi.daemon")

RETRY_SECONDS = 10.0  # how often a device that failed to start is tried again
FEEDBACK_GAP = 3.0  # at most one failure beep per worker this often: a persistent fault must not buzz on
WORKER_SILENCE = 20.0  # a worker silent this long is restarted: well before systemd's 30 s watchdog acts
METHODS = {"face": "face", "fingerprint": "finger"}
STORAGE_MARGIN = 1 << 20  # after a punch refused for storage, the kiosk says so while less than this is free
STOP_BUDGET = 8.0  # seconds each part may take to stop (SIGTERM → exit well within systemd's 10 s)


class Daemon:
    def __init__(self, cfg: Config, *, notifier: sdnotify.Notifier | None = None):
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.events = EventBus()
        self.notifier = notifier or sdnotify.Notifier()
        self.watchdog = sdnotify.Watchdog(self.notifier)
        self.workers: dict[str, object] = {}  # name -> running worker (face, fingerprint)
        self.wanted: dict[str, float] = {}  # name -> monotonic time of the next start attempt
        self.services: dict[str, object] = {}
        self.feedback = None
        self.work_code_button = None  # the fingerprint path's work-code button ([work_codes] button_pin)
        self.jobs = JobContext(cfg)
        self.scheduler = None
        self.health = None
        self.web_port: int | None = None
        self.worker_silence = WORKER_SILENCE
        self.restarts: dict[str, int] = {}  # name -> how often the worker was restarted
        self.restart_reason: dict[str, str] = {}
        self._last_failure_feedback: dict[str, float] = {}
        # one slot sync at a time (start, roster change, retry); after a failed one, when to try again
        self._finger_sync_lock = threading.Lock()
        self._finger_sync_due: float | None = None

    # -- the table of contents -------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signal_handlers()
        self.open_log()
        self.start_feedback()
        self.start_punch_service()
        self.start_workers()
        self.start_network_services()
        self.start_health()
        self.start_scheduler()
        self.notifier.ready(self.summary())
        self.watchdog.start()
        log.info("presensi running: %s", self.summary())
        self.main_loop()
        return self.shutdown()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())

    def open_log(self) -> None:
        """Open the punch log and run quick_check: a damaged database stops the start with the recovery text;
        a full disk starts the daemon degraded (the gate refuses punches and reopens when it can)."""
        self.faults = FaultBook(self.cfg.state_dir)
        self.log = LogGate(self.cfg, self.faults)
        if not self.log.open():
            log.error("starting degraded: %s", self.log.error)

    def start_feedback(self) -> None:
        if not self.cfg.gpio.enabled:
            return
        from drivers.gpio import Feedback, GpioError

        try:
            self.feedback = Feedback.from_settings(self.cfg.gpio)
        except GpioError as e:
            log.error("%s; continuing without LEDs and buzzer", e)

    def start_punch_service(self) -> None:
        self.punches = PunchService(self.cfg, self.log, names=self._employee_name,
                                    feedback=[self._show_outcome])
        self.start_work_codes()

    def start_work_codes(self) -> None:
        """The kiosk's offer after a recognised face or finger, and the fingerprint path's button."""
        from terminal.punch import workcodes

        wc = self.cfg.work_codes
        if not wc.enabled:
            return
        if wc.after_punch_seconds > 0:
            self.punches.choices = workcodes.ChoiceWindow(self.punches.work_codes, wc.after_punch_seconds,
                                                          self.events.publish)
        if wc.button_pin is None:
            return
        if not self.cfg.gpio.enabled:
            log.error("[work_codes] button_pin is set but [gpio] enabled = false; the work-code button is off")
            return
        from drivers.gpio import GpioError, PressButton

        try:
            self.work_code_button = PressButton.from_settings(wc.button_pin, self.cfg.gpio, self._work_code_pressed)
        except GpioError as e:
            log.error("%s; continuing without the work-code button", e)

    def _work_code_pressed(self) -> None:
        """Each press selects the next code for the next punch (after the last: none); the kiosk shows it."""
        from terminal.punch import workcodes

        armed = self.punches.chooser.peek()
        code = workcodes.next_code(self.punches.work_codes, armed["code"] if armed else None)
        if code is None:
            self.punches.chooser.clear()
            self.events.publish("workcode-armed", {"code": None, "source": "button"})
            return
        self.punches.chooser.arm(code, "button")
        self.events.publish("workcode-armed", {"code": code, "label": self.punches.work_codes.codes[code].label,
                                               "seconds": self.punches.chooser.seconds, "source": "button"})

    def start_workers(self) -> None:
        if self.cfg.camera.enabled:
            self.wanted["face"] = 0.0
        if self.cfg.fingerprint.enabled:
            self.wanted["fingerprint"] = 0.0
        self._start_due_workers()

    def start_network_services(self) -> None:
        from terminal.app import web

        self.web_port = web.start(self)
        if self.cfg.zk.enabled:
            from sync.device.zk.server import serve_zk

            self.services["zk"] = serve_zk(self.cfg, self.cfg.state_dir, self.stop_event)
        if self.cfg.adms.enabled:
            from sync.device.adms import run_adms

            t = threading.Thread(target=run_adms, args=(self.cfg, self.cfg.state_dir, self.stop_event),
                                 kwargs={"on_reboot": self.stop_event.set}, name="adms", daemon=True)
            t.start()
            self.services["adms"] = t

    def start_health(self) -> None:
        from terminal.ops.health import HealthMonitor

        providers = {name: (lambda n=name: self._worker_health(n)) for name in ("face", "fingerprint")
                     if name in self.wanted}
        self.health = HealthMonitor.open(self.cfg, providers=providers)
        beat = self.watchdog.register("health", max_silence=max(60.0, 6 * self.cfg.health.interval))
        t = threading.Thread(target=self._health_loop, args=(beat,), name="health", daemon=True)
        t.start()

    def start_scheduler(self) -> None:
        from terminal.app.scheduler import MonotonicScheduler

        self.jobs.state["on_roster_change"] = self.on_roster_change
        self.jobs.state["stop"] = self.stop_event  # a push in progress ends early when the daemon stops
        self.scheduler = MonotonicScheduler()  # on the monotonic clock: a wall-clock step delays nothing
        names = schedule_jobs(self.scheduler, self.jobs)
        self.scheduler.start()
        log.info("periodic jobs: %s", ", ".join(names))
        if self.cfg.central.url:  # a small sign of life that keeps going while bulk upload fails
            from sync.device import push
            from terminal.app import heartbeat as heartbeat_health

            health = heartbeat_health.cached(self.cfg, self.indicators, self._live_parts)
            heartbeat = push.Heartbeat(self.cfg.state_dir, push.Settings.from_config(self.cfg), health=health)
            heartbeat.start()
            self.services["heartbeat"] = heartbeat

    def main_loop(self) -> None:
        beat = self.watchdog.register("main", max_silence=30.0)
        last_status = 0.0
        while not self.stop_event.wait(1.0):
            beat.beat()
            self._restart_stalled_workers()
            self._start_due_workers()
            self._retry_storage()
            self._retry_fingerprint_sync()
            if time.monotonic() - last_status > 10:
                self.notifier.status(self.summary())
                last_status = time.monotonic()

    def shutdown(self) -> int:
        """Stop everything within STOP_BUDGET seconds in total; the punch in progress finishes first
        (workers are joined before the log closes)."""
        log.info("stopping")
        self.notifier.stopping("stopping")
        self.watchdog.stop(timeout=2)
        stops = {f"worker {name}": w.stop for name, w in self.workers.items()}
        if self.scheduler is not None:
            stops["periodic jobs"] = self._stop_jobs
        for name, service in self.services.items():
            stop = getattr(service, "stop", None) or getattr(service, "close", None)
            if callable(stop):
                stops[f"service {name}"] = stop
        _stop_all(stops, STOP_BUDGET)
        if self.health is not None:
            self.health.close()
        if self.feedback is not None:
            self.feedback.close()
        if self.work_code_button is not None:
            self.work_code_button.close()
        self.log.close()
        log.info("stopped")
        return 0

    def _stop_jobs(self) -> None:
        """No new job runs; the one in progress ends (a push sees stop_event after its current request),
        and only then is the push client's database closed: closed under a running push job, it crashed
        the process (SIGSEGV in sqlite) about one stop in six."""
        if self.scheduler is not None:
            self.scheduler.shutdown(timeout=STOP_BUDGET)  # joins the job threads: the push in progress ends
        pusher = self.jobs.state.get("pusher")
        if pusher is not None:
            pusher.close()

    # -- parts -----------------------------------------------------------------------------------------

    def _start_due_workers(self) -> None:
        from terminal.app.workers import FaceWorker, start_fingerprint

        now = time.monotonic()
        for name, due in list(self.wanted.items()):
            if name in self.workers or now < due:
                continue
            try:
                beat = self.watchdog.register(name, max_silence=self.worker_silence)
                failed = functools.partial(self._worker_failed, name)
                if name == "face":
                    self.workers[name] = FaceWorker(self.cfg, self.punches, self.events, beat,
                                                    on_failure=failed).start()
                else:
                    self.workers[name] = start_fingerprint(self.cfg, self.punches, self.events, self.feedback,
                                                           heartbeat=beat, on_failure=failed)
                    # bring the sensor's slots in line with the installed roster (minutes for a full
                    # sensor at 57600 baud): in the background, capture keeps running meanwhile
                    self._start_fingerprint_sync()
                log.info("%s started", name)
            except Exception as e:  # missing device or model: degrade, report through health, retry
                self.watchdog.unregister(name)
                self.wanted[name] = now + RETRY_SECONDS
                self.jobs.state[f"{name}_error"] = f"{type(e).__name__}: {e}"
                log.error("%s not available (%s); retrying in %.0f s", name, e, RETRY_SECONDS)

    def _worker_health(self, name: str) -> dict:
        worker = self.workers.get(name)
        if worker is None:
            report = {"ok": False, "error": self.jobs.state.get(f"{name}_error", f"{name} not started")}
        else:
            report = worker.health()
        if self.restarts.get(name):
            report["restarts"] = self.restarts[name]
            report["last_restart"] = self.restart_reason.get(name)
        return report

    def _worker_failed(self, name: str, error: Exception) -> None:
        """One attempt of a worker failed: the employee is told to retry (rate-limited beep), IT staff get a
        fault with the error; the worker goes on with the next frame or finger."""
        text = f"{type(error).__name__}: {error}"
        self.faults.raise_(f"worker:{name}:error", part=name, category=name if name == "fingerprint" else "camera",
                           message=f"the {name} worker failed on an attempt ({text}); it goes on",
                           diagnostics={"error": text})
        now = time.monotonic()
        if now - self._last_failure_feedback.get(name, -1e9) < FEEDBACK_GAP:
            return
        self._last_failure_feedback[name] = now
        self.events.publish("decision", {"accepted": False, "recorded": False, "method": METHODS[name],
                                         "message": FAILED_MESSAGE, "reason": "error", "error": text})
        if self.feedback is not None:
            try:
                self.feedback.failure()
            except Exception:  # the LEDs may be what failed; the screen has said it already
                log.exception("failure feedback failed")

    def _restart_stalled_workers(self) -> None:
        """A worker whose heartbeat went silent (its thread died or hangs) is stopped in the background and
        started again; the restart is a fault, and health and `presensi status` show it."""
        now = time.monotonic()
        for name, worker in list(self.workers.items()):
            beat = self.watchdog.beats.get(name)
            if beat is None or beat.fresh(now):
                continue
            silent = now - beat.last
            reason = f"the {name} worker stopped responding (no heartbeat for {silent:.0f} s); restarted"
            log.error("%s", reason)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.restart_reason[name] = reason
            self.faults.raise_(f"worker:{name}:restarted", part=name,
                               category=name if name == "fingerprint" else "camera", message=reason,
                               diagnostics={"silent_seconds": round(silent, 1), "restarts": self.restarts[name]})
            del self.workers[name]
            self.watchdog.unregister(name)
            # the new one starts once the old one let go of its device (or after RETRY_SECONDS if it hangs)
            self.wanted[name] = now + RETRY_SECONDS
            threading.Thread(target=self._replace_worker, args=(worker, name), name=f"stop-{name}",
                             daemon=True).start()

    def _replace_worker(self, worker, name: str) -> None:
        _stop_quietly(worker, name)
        if name not in self.workers:
            self.wanted[name] = time.monotonic()

    def _retry_storage(self) -> None:
        """While the log is unavailable, try it again; faults kept in memory are written when they can be."""
        if not self.log.available and self.log.retry_due():
            self.events.publish("status", self.indicators())
        if self.faults.unwritten and self.log.available:
            self.faults.flush()

    def _health_loop(self, beat) -> None:
        while not self.stop_event.is_set():
            beat.beat()
            try:
                self.health.tick()
                if self.feedback is not None:
                    self.feedback.set_fault(any(r.level == "fault" for r in self.health.last.values()))
            except Exception:
                log.exception("health check round failed")
            self.events.publish("status", self.indicators())
            self.stop_event.wait(self.cfg.health.interval)

    def on_roster_change(self) -> None:
        """A new roster was installed: local enrolments follow it (those it carries or whose employee it no
        longer lists are forgotten), then schedule, holidays and work codes (the kiosk redraws its buttons),
        face gallery and fingerprint slots."""
        from terminal.app import roaming

        try:
            roaming.settle_local(self.cfg.state_dir)
        except Exception as e:  # the gallery and slots below still follow the roster itself
            log.error("local enrolments not settled with the new roster: %s", e)
        self.punches.reload_schedule()
        codes = self.punches.work_codes
        self.events.publish("workcodes", {"codes": [c.as_dict() for c in codes.codes.values()] if codes.enabled
                                          else []})
        face = self.workers.get("face")
        if face is not None:
            face.reload_gallery()
        self._sync_fingerprints()

    def _start_fingerprint_sync(self) -> None:
        threading.Thread(target=self._sync_fingerprints, name="finger-sync", daemon=True).start()

    def _retry_fingerprint_sync(self) -> None:
        """A failed slot sync is tried again until it succeeds: until then the sensor may still hold the
        slots of someone the roster no longer lists, or lack a new employee's."""
        due = self._finger_sync_due
        if due is not None and time.monotonic() >= due and not self._finger_sync_lock.locked():
            self._finger_sync_due = None
            self._start_fingerprint_sync()

    def _sync_fingerprints(self) -> None:
        finger = self.workers.get("fingerprint")
        if finger is None:
            return
        from terminal.punch import roster as roster_mod

        with self._finger_sync_lock:
            try:
                with roster_mod.Roster.open(self.cfg.state_dir) as r:
                    wanted = [(e["id"], e["finger_templates"]) for e in r.employees()]
                finger.sync(wanted)
                self._finger_sync_due = None
            except Exception as e:  # a busy or unplugged sensor: health reports the sensor; try again soon
                self._finger_sync_due = time.monotonic() + RETRY_SECONDS
                log.error("fingerprint slot sync failed (retrying in %.0f s): %s", RETRY_SECONDS, e)

    def _employee_name(self, employee: str) -> str:
        try:
            from terminal.punch import roster as roster_mod

            with roster_mod.Roster.open(self.cfg.state_dir) as r:
                person = r.employee(employee)
            return (person or {}).get("name") or employee
        except Exception:
            return employee

    def _show_outcome(self, outcome: PunchOutcome) -> None:
        """Feedback only after the punch committed (PunchService calls this after append returned)."""
        worker = {v: k for k, v in METHODS.items()}.get(outcome.method)
        if outcome.recorded and worker and self.faults.is_open(f"worker:{worker}:error"):
            self.faults.clear(f"worker:{worker}:error", message=f"a {outcome.method} punch was recorded again")
        if outcome.error and not outcome.acknowledged:
            self.faults.raise_("storage:punch", part="database", category="disk",
                               message=f"a {outcome.method} punch was refused: {outcome.error}",
                               diagnostics={"error": outcome.error})
        elif outcome.recorded and self.faults.is_open("storage:punch"):
            self.faults.clear("storage:punch", message="punches are recorded again")
        data = {"accepted": outcome.acknowledged, "recorded": outcome.recorded, "method": outcome.method,
                "employee": outcome.employee, "name": outcome.name, "kind": outcome.kind,
                "time_verified": outcome.time_verified, "message": outcome.message, "decision": outcome.decision,
                "work_code": ((outcome.record or {}).get("details") or {}).get("work_code") if outcome.recorded
                else None,
                "notices": outcome.notices}
        self.events.publish("decision", data)  # first: a broken buzzer must not hide the answer
        if self.feedback is not None:
            try:
                (self.feedback.success if outcome.acknowledged else self.feedback.failure)()
            except Exception as e:  # the punch stands (or stays refused); IT staff learn of the LEDs
                self.faults.raise_("worker:gpio:error", part="gpio", category="gpio",
                                   message=f"LED/buzzer feedback failed: {type(e).__name__}: {e}",
                                   diagnostics={"error": f"{type(e).__name__}: {e}"})

    def indicators(self) -> dict:
        """What the kiosk shows in its corner: network, pending sync, sensor, time verification."""
        from terminal.timing import timeline

        last_push = self.jobs.state.get("last_push") or {}
        try:  # its own connection: this runs in the health and heartbeat threads, not the punch writer's
            conn = punchlog.connect(self.log.path)
            try:
                clock_state = timeline.now(conn)
            finally:
                conn.close()
        except Exception:
            clock_state = {"verified": False}
        return {
            "storage": self._storage_indicator(),
            "faults": self.faults.current(),
            "central": bool(self.cfg.central.url),
            "online": bool(last_push.get("done")) if self.cfg.central.url else None,
            "pending": last_push.get("punches"),
            "fingerprint": self._worker_health("fingerprint").get("ok") if "fingerprint" in self.wanted else None,
            "camera": self._worker_health("face").get("ok") if "face" in self.wanted else None,
            "time_verified": bool(clock_state.get("verified")),
            "utc": clock_state.get("utc"),
            "apel_cancelled": self._apel_cancelled_today(clock_state.get("utc")),
        }

    def _live_parts(self) -> dict:
        """The camera's and fingerprint sensor's health as their workers see it (None: not used here)."""
        return {part: self._worker_health(worker) if worker in self.wanted else None
                for part, worker in (("camera", "face"), ("fingerprint", "fingerprint"))}

    def _apel_cancelled_today(self, utc: str | None) -> bool:
        """Whether today's apel pagi (office-local date of the corrected time) is cancelled: the kiosk says so."""
        import datetime as dt

        try:
            now = dt.datetime.fromisoformat(utc.replace("Z", "+00:00")) if utc else dt.datetime.now(dt.UTC)
            schedule = self.punches.schedule
            return schedule.day_plan(schedule.local(now).date()).apel_cancelled
        except Exception as e:  # the indicator is a courtesy; punches decide with the schedule itself
            log.warning("apel state for the kiosk not computed: %s", e)
            return False

    def _storage_indicator(self) -> dict:
        """Whether punches can be recorded now; the kiosk shows the message while they cannot."""
        if not self.log.available:
            return {"ok": False, "message": self.log.message(), "error": str(self.log.error)}
        if self.faults.is_open("storage:punch") and _free_bytes(self.cfg.state_dir) < STORAGE_MARGIN:
            return {"ok": False, "message": "Penyimpanan bermasalah — presensi terakhir ditolak",
                    "error": next((f["message"] for f in self.faults.current()
                                   if f["fault_key"] == "storage:punch"), "")}
        return {"ok": True}

    def status_report(self) -> dict:
        """`presensi status` of this terminal (the admin's diagnostics bundle includes it)."""
        from terminal.app import status

        return status.collect(self.cfg)

    def export_offline(self, to_dir, after_seq: int | None = None, zk_attlog: bool = False) -> dict:
        """The USB export the admin page starts: unacknowledged punches (or all after `after_seq`), with the
        ZKTeco attendance file when asked (`presensi export --format zk-attlog`)."""
        from sync.device import offline
        from sync.device.zkattlog import ZkAttlog

        return offline.export(self.cfg.state_dir, self.cfg.device.id, self.cfg.central.url, to_dir,
                              after_seq=after_seq, zk=ZkAttlog.from_config(self.cfg) if zk_attlog else None)

    def summary(self) -> str:
        parts = [f"log seq {self.log.head()[0]}" if self.log.available else "log UNAVAILABLE (punches refused)"]
        for name in ("face", "fingerprint"):
            if name in self.wanted:
                parts.append(f"{name} {'up' if name in self.workers else 'DOWN'}")
        if self.web_port:
            parts.append(f"web :{self.web_port}")
        return ", ".join(parts)


def _free_bytes(path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def _stop_quietly(worker, name: str) -> None:
    try:
        worker.stop()
    except Exception:
        log.exception("stopping the stalled %s worker failed", name)


def _stop_all(stops: dict, budget: float) -> None:
    """Run every stop function in parallel and wait at most `budget` seconds for all of them."""
    threads = []
    for what, fn in stops.items():
        t = threading.Thread(target=fn, name=f"stop-{what}", daemon=True)
        t.start()
        threads.append((what, t))
    deadline = time.monotonic() + budget
    for what, t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            log.warning("%s did not stop within %.0f s; leaving it", what, budget)
