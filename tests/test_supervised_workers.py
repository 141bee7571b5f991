"""Supervised workers: a failed attempt in the fingerprint worker gets an answer on the kiosk, the failure
beep and a fault, and the next finger punches; a worker that stops beating is restarted, and health and
`presensi status` show it.

The daemon runs in this process (so that gpiozero's mock pins can be read), on the unmodified pyfingerprint
driver against the sensor emulator on a real pty, with its punch log on a small ext4 file system made
without root's reserve (tests/fullfs.py): a disk filled here is full for the daemon too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from conftest import REPO, presensi, wait_for
from fullfs import FullDisk, write_config
from kiosk_sse import Kiosk

from drivers.fingerprint.emulator import FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
from terminal import config
from terminal.app.daemon import Daemon
from terminal.log import punchlog
from terminal.ops import faults

EMPLOYEE, STRANGER = "199002022015021002", "stranger"


def roster_bundle(tmp_path) -> tuple[dict, object]:
    """A signed roster with one fingerprint employee, as the central server publishes it."""
    from sync.server.storage import open_store
    from sync.wire.rosterbundle import build_bundle

    db = tmp_path / "central.db"
    reg = json.loads(presensi("server", "add-device", "full-01", "--db", str(db), "--json").stdout)
    employees = [{"id": EMPLOYEE, "name": "Andi Pratama", "uid": 1, "pin_allowed": True, "face_templates": [],
                  "finger_templates": [synthetic_template(f"demo:{EMPLOYEE}")]}]
    bundle = tmp_path / "roster.bundle"
    bundle.write_bytes(build_bundle(open_store(str(db)).server_key(), 1, employees, None, None))
    return reg, bundle


class Terminal:
    def __init__(self, disk: FullDisk, daemon: Daemon, emu: FingerprintEmulator, cfg):
        self.disk, self.daemon, self.emu, self.cfg = disk, daemon, emu, cfg
        self.kiosk = Kiosk(daemon.web_port)

    def touch(self, template: bytes, what: str, answer=lambda d: True) -> dict:
        """A finger on the glass until the kiosk gives the answer looked for; returns it."""
        seen = len(self.kiosk.decisions())
        self.emu.place_finger(template, score=140)
        try:
            return wait_for(lambda: [d for d in self.kiosk.decisions()[seen:] if answer(d)], 30, what)[0]
        finally:
            self.emu.remove_finger()

    def beeps(self) -> int:
        return sum(1 for s in self.daemon.feedback.buzzer.pin.states if s.state)

    def red_flashes(self) -> int:
        return sum(1 for s in self.daemon.feedback.red.pin.states if s.state)

    def fault_events(self) -> list[dict]:
        with punchlog.PunchLog(self.cfg.state_dir, readonly=True) as log:
            return faults.events(log.conn)

    def punches(self) -> list[dict]:
        with punchlog.PunchLog(self.cfg.state_dir, readonly=True) as log:
            return list(log.records())


@pytest.fixture
def terminal(tmp_path):
    disk = FullDisk(root_reserve=False)
    emu = FingerprintEmulator(Settings(capacity=162), link=tmp_path / "ttyFP")
    emu.start()
    daemon = thread = None
    try:
        reg, bundle = roster_bundle(tmp_path)
        path = write_config(disk, f"""[central]
server_key = "{reg['server_key']}"
[web]
listen = "127.0.0.1:0"
[camera]
enabled = false
[fingerprint]
enabled = true
port = "{emu.path}"
[gpio]
enabled = true
pin_factory = "mock"
""")
        assert presensi("init", config=path).returncode == 0
        imported = presensi("roster", "import", str(bundle), config=path)
        assert imported.returncode == 0, imported.stderr
        daemon = Daemon(config.load(path))
        daemon.worker_silence = 3.0  # a worker silent this long is restarted (30 s in service)
        thread = threading.Thread(target=daemon.run, name="daemon-under-test", daemon=True)
        thread.start()
        wait_for(lambda: daemon.web_port and "fingerprint" in daemon.workers, 60, "the daemon and its sensor")
        finger = daemon.workers["fingerprint"]
        wait_for(lambda: EMPLOYEE in {e for e, _ in finger.slots.rows().values()}, 60, "the slot sync")
        t = Terminal(disk, daemon, emu, daemon.cfg)
        yield t
        t.kiosk.close()
    finally:
        if daemon is not None:
            daemon.stop_event.set()
            thread.join(20)
        emu.stop()
        disk.close()


def test_a_finger_refused_for_a_full_disk_is_answered_beeped_faulted_and_the_next_one_punches(terminal):
    t = terminal
    template = synthetic_template(f"demo:{EMPLOYEE}")
    t.disk.fill()
    before = t.beeps()
    refused = t.touch(template, "the answer to a finger on a full disk")
    assert refused["accepted"] is False and refused["recorded"] is False
    assert refused["message"].startswith("Penyimpanan penuh"), refused
    assert wait_for(lambda: t.beeps() - before >= 2, 5, "the failure beeps (two)")
    open_now = {f["fault_key"]: f for f in t.daemon.indicators()["faults"]}
    assert "the disk is full; the punch was NOT recorded" in open_now["storage:punch"]["message"], open_now
    assert t.daemon.indicators()["storage"]["ok"] is False
    assert t.daemon.workers["fingerprint"].loop._thread.is_alive()

    t.disk.free()
    punched = t.touch(template, "the answer to the next finger")
    assert punched["recorded"] is True and punched["employee"] == EMPLOYEE, punched
    assert [p["employee"] for p in t.punches()] == [EMPLOYEE]
    events = [(e["fault_key"], e["event"]) for e in t.fault_events() if e["fault_key"] == "storage:punch"]
    assert events == [("storage:punch", "raised"), ("storage:punch", "cleared")], t.fault_events()


HOLD_LOCK = """
import sys, time
from terminal.log import punchlog
log = punchlog.PunchLog(sys.argv[1])
with log._lock.hold():
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_a_worker_that_stops_beating_is_restarted_and_shown_in_health_and_status(terminal):
    t = terminal
    # another process holds the punch log: the capture loop waits in the append, silent
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(t.cfg.state_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "holding"
        old = t.daemon.workers["fingerprint"]
        t.emu.place_finger(synthetic_template(f"demo:{EMPLOYEE}"), score=140)
        wait_for(lambda: t.daemon.workers.get("fingerprint") not in (None, old), 30, "the worker's restart")
        t.emu.remove_finger()
    finally:
        holder.stdin.close()
        holder.wait(30)
    health = t.daemon._worker_health("fingerprint")
    assert health["restarts"] == 1 and "stopped responding" in health["last_restart"], health

    status = presensi("status", "--json", config=t.disk.root / "presensi.toml")
    assert status.returncode == 0, status.stderr
    open_faults = {f["fault_key"]: f for f in json.loads(status.stdout)["faults"]["open"]}
    assert "stopped responding" in open_faults["worker:fingerprint:restarted"]["message"], open_faults

    answer = t.touch(synthetic_template(f"demo:{EMPLOYEE}"), "the restarted worker's answer")
    assert answer["accepted"] is True, answer


def test_the_capture_loop_answers_an_attempt_that_raised_and_goes_on_with_the_next_finger(tmp_path):
    """The fingerprint service on its own (as the tools use it: a bare PunchLog, no PunchService to turn a
    full disk into a refusal): the append raises, the employee gets the failure pattern, health names the
    error, and the next finger is read and punched once space returns."""
    from gpiozero.pins.mock import MockFactory

    from drivers.gpio import Feedback
    from terminal.finger.service import FingerprintService

    disk = FullDisk(root_reserve=False)
    emu = FingerprintEmulator(Settings(capacity=162), link=tmp_path / "ttyFP")
    emu.start()
    try:
        path = write_config(disk, f'[fingerprint]\nenabled = true\nport = "{emu.path}"\n')
        assert presensi("init", config=path).returncode == 0
        cfg = config.load(path)
        log = punchlog.PunchLog(cfg.state_dir)
        decisions = []
        with Feedback(green_led=17, red_led=27, buzzer=22, pin_factory=MockFactory()) as feedback:
            service = FingerprintService(cfg.fingerprint, cfg.state_dir, log, feedback=feedback,
                                         on_decision=decisions.append)
            template = synthetic_template(f"demo:{EMPLOYEE}")
            service.sync([(EMPLOYEE, [template])])
            service.start()
            try:
                disk.fill()
                before = sum(1 for s in feedback.buzzer.pin.states if s.state)
                emu.place_finger(template, score=140)
                wait_for(lambda: service.errors, 30, "the failed attempt")
                emu.remove_finger()
                assert wait_for(lambda: sum(1 for s in feedback.buzzer.pin.states if s.state) - before >= 2, 5,
                                "the failure beeps")
                assert "StorageFull" in service.health()["last_attempt_error"], service.health()
                assert "the disk is full" in service.health()["last_attempt_error"]
                assert not decisions, "a punch that was not recorded was shown as decided"

                disk.free()
                emu.place_finger(template, score=140)
                punched = wait_for(lambda: [d for d in decisions if d.record], 30, "the next finger's punch")
                emu.remove_finger()
                assert punched[0].employee == EMPLOYEE and log.count() == 1
            finally:
                service.stop()
                log.close()
    finally:
        emu.stop()
        disk.close()


def test_a_slot_sync_that_failed_is_tried_again_without_waiting_for_the_next_roster(terminal):
    """A sensor that stops answering during a slot sync (here: swapped for an empty one that hangs) is
    brought in line with the roster as soon as it answers again, not at the next roster change: until then
    an employee's finger would be refused, or a removed employee's accepted."""
    t = terminal
    template = synthetic_template(f"demo:{EMPLOYEE}")
    t.emu.set_fault("hang")
    t.emu.sim.library.clear()
    sync = threading.Thread(target=t.daemon.on_roster_change, name="roster-change")
    sync.start()
    sync.join(120)
    assert not sync.is_alive(), "the slot sync against a hung sensor did not give up"
    assert template not in t.emu.sim.library.values()
    t.emu.power_cycle()  # the sensor answers again; nothing else changes
    wait_for(lambda: template in t.emu.sim.library.values(), 90, "the sensor refilled after the failed sync")
