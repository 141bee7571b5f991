"""Slot sync against the emulator (unpaced: 1000 templates at 57600 baud take minutes; bench/ measures
that): a 1000-template roster fills 1000 slots, +5/−5 touches only those slots, a wiped or swapped sensor
is refilled, and a 162-slot sensor with 200 templates gives a capacity fault naming who is affected.
Also enrolment (two reads → createTemplate → store → download)."""

from __future__ import annotations

import pytest

from drivers.fingerprint.base import EnrolmentError
from drivers.fingerprint.emulator import FingerprintEmulator
from drivers.fingerprint.emulator import protocol as p
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
from drivers.fingerprint.registry import from_config
from terminal.config import Fingerprint
from terminal.finger.slots import SlotMap, enrol_employee, sync_slots


def roster(n: int, start: int = 0) -> list[tuple[str, list[bytes]]]:
    return [(f"EMP{i:05d}", [synthetic_template(f"EMP{i:05d}")]) for i in range(start, start + n)]


def sensor_holds(emu, slots: SlotMap) -> dict[str, bytes]:
    """employee → template actually in the sensor slot the map gives for them."""
    return {emp: emu.sim.library[slot] for slot, (emp, _) in slots.rows().items()}


@pytest.fixture
def rig(tmp_path, request):
    capacity = getattr(request, "param", 1000)
    with FingerprintEmulator(Settings(capacity=capacity), link=tmp_path / "fp", paced=False) as emu:
        sensor = from_config(Fingerprint(port=emu.path))
        with SlotMap(tmp_path) as slots:
            yield emu, sensor, slots
        sensor.close()


def touched_slots(emu, since: int) -> set[int]:
    """Slots named by Store/DeletChar/LoadChar commands in the packet log after entry `since`."""
    out = set()
    for entry in list(emu.packet_log)[since:]:
        payload = bytes.fromhex(entry["payload"]) if entry["dir"] == "rx" and entry["pid"] == 1 else b""
        if payload[:1] in (bytes([p.STORE]), bytes([p.LOAD_CHAR])):
            out.add(int.from_bytes(payload[2:4], "big"))
        if payload[:1] == bytes([p.DELETE_CHAR]):
            out.add(int.from_bytes(payload[1:3], "big"))
    return out


def test_a_1000_template_roster_fills_1000_slots_and_changes_touch_only_their_slots(rig):
    emu, sensor, slots = rig
    people = roster(1000)
    report = sync_slots(sensor, slots, people)
    assert (len(report.added), report.removed, report.fault) == (1000, [], None)
    assert sensor.info()["templates"] == 1000
    assert sensor_holds(emu, slots) == {emp: ts[0] for emp, ts in people}

    before = dict(emu.sim.library)
    emu.packet_log.clear()
    changed = people[5:] + roster(5, start=1000)  # EMP00000-4 left, EMP01000-4 joined
    report = sync_slots(sensor, slots, changed)
    assert len(report.added) == 5 and len(report.removed) == 5 and report.repaired is None
    touched = set(report.added) | set(report.removed)
    assert touched_slots(emu, 0) <= touched | set(range(0, 1000, 333))  # plus the read-back spot checks
    assert {s for s in before if before[s] != emu.sim.library.get(s)} == touched
    assert sensor_holds(emu, slots) == {emp: ts[0] for emp, ts in changed}

    emu.packet_log.clear()
    report = sync_slots(sensor, slots, changed)  # nothing changed: nothing written
    assert (report.added, report.removed) == ([], [])
    assert not any(e.get("command") in ("store", "delete", "down_char") for e in emu.packet_log)


def test_a_wiped_sensor_is_detected_and_refilled(rig):
    emu, sensor, slots = rig
    people = roster(40)
    sync_slots(sensor, slots, people)
    emu.sim.library.clear()  # e.g. someone ran "clear database" from a vendor tool
    report = sync_slots(sensor, slots, people)
    assert "wiped" in report.repaired and len(report.added) == 40
    assert sensor_holds(emu, slots) == {emp: ts[0] for emp, ts in people}


def test_a_swapped_sensor_is_detected_and_refilled(rig):
    emu, sensor, slots = rig
    people = roster(40)
    sync_slots(sensor, slots, people)
    for slot in list(emu.sim.library):  # another terminal's sensor: same occupancy, other fingers
        emu.sim.library[slot] = synthetic_template(f"stranger-{slot}")
    report = sync_slots(sensor, slots, people)
    assert "swapped" in report.repaired and len(report.added) == 40
    assert sensor_holds(emu, slots) == {emp: ts[0] for emp, ts in people}


def test_unknown_templates_on_the_sensor_are_deleted(rig):
    emu, sensor, slots = rig
    emu.sim.store(500, synthetic_template("left by a vendor tool"))
    report = sync_slots(sensor, slots, roster(3))
    assert "unknown template" in report.repaired and 500 not in emu.sim.library
    assert sorted(emu.sim.library) == [0, 1, 2]


@pytest.mark.parametrize("rig", [162], indirect=True)
def test_more_templates_than_slots_gives_a_capacity_fault_naming_who(rig):
    emu, sensor, slots = rig
    people = roster(150) + [(f"TWO{i:03d}", [synthetic_template(f"TWO{i}a"), synthetic_template(f"TWO{i}b")])
                            for i in range(25)]  # 150 + 50 = 200 templates
    report = sync_slots(sensor, slots, people)
    assert len(report.added) == 162 and len(emu.sim.library) == 162
    assert sum(report.unplaced.values()) == 38
    assert report.unplaced == {**{f"TWO{i:03d}": 2 for i in range(6, 25)}}
    assert "38 fingerprint template(s) did not fit" in report.fault and "capacity 162" in report.fault
    assert "TWO024 (2)" in report.fault

    from terminal.finger.slots import report_sync_fault
    from terminal.log import punchlog
    from terminal.ops import faults

    state = slots.state_dir / "state"
    punchlog.init(state)
    with punchlog.PunchLog(state) as log:
        report_sync_fault(log.conn, report)
        report_sync_fault(log.conn, report)  # the same fault is not raised twice
        (fault,) = faults.open_faults(log.conn)
        assert fault["part"] == "fingerprint" and "38 fingerprint template(s)" in fault["message"]
        assert fault["diagnostics"]["unplaced"]["TWO006"] == 2
        report = sync_slots(sensor, slots, people[:150])  # the roster shrank: everyone fits again
        report_sync_fault(log.conn, report)
        assert faults.open_faults(log.conn) == []


def test_templates_of_the_wrong_size_are_reported_not_sent(rig):
    emu, sensor, slots = rig
    report = sync_slots(sensor, slots, [("EMP1", [b"\x03\x01" * 10]), ("EMP2", [synthetic_template(2)])])
    assert report.invalid == {"EMP1": 1} and len(emu.sim.library) == 1


def test_enrolment_stores_downloads_and_keeps_the_template_for_the_roster(rig):
    emu, sensor, slots = rig
    finger = synthetic_template("new employee")
    script = {"place": lambda: emu.place_finger(finger), "lift": emu.remove_finger,
              "place_again": lambda: emu.place_finger(finger), "done": emu.remove_finger}
    result = enrol_employee(sensor, slots, "NEW001", prompt=lambda step: script[step](), timeout=5)
    assert result["slot"] == 0 and emu.sim.library[0] == finger
    import base64

    assert base64.b64decode(result["template"]) == finger
    assert slots.employee_for(0) == "NEW001"
    assert [(e["employee"], e["template"]) for e in slots.enrolments()] == [("NEW001", finger)]
    sealed = slots.conn.execute("SELECT sealed_template FROM enrolments").fetchone()[0]
    assert finger not in sealed  # encrypted at rest
    report = sync_slots(sensor, slots, roster(2))  # the roster does not carry it yet: it stays
    assert report.removed == [] and emu.sim.library[0] == finger


def test_enrolment_with_two_different_fingers_is_refused(rig):
    emu, sensor, slots = rig
    script = {"place": lambda: emu.place_finger(synthetic_template("a")), "lift": emu.remove_finger,
              "place_again": lambda: emu.place_finger(synthetic_template("b")), "done": emu.remove_finger}
    with pytest.raises(EnrolmentError, match="not of the same finger"):
        enrol_employee(sensor, slots, "NEW002", prompt=lambda step: script[step](), timeout=5)
    assert emu.sim.library == {} and slots.rows() == {}


def test_cli_sync_loads_the_installed_roster_and_status_reports_the_slots(tmp_path):
    import json

    from conftest import presensi, write_config

    from terminal import config as config_mod
    from terminal.finger.slots import status_part
    from terminal.punch import roster as roster_mod

    with FingerprintEmulator(Settings(capacity=162), link=tmp_path / "fp", paced=False) as emu:
        cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state",
                           f'\n[fingerprint]\nenabled = true\nport = "{emu.path}"\n')
        assert presensi("init", config=cfg).returncode == 0
        employees = [{"id": f"19850101201001100{i}", "name": f"Pegawai {i}", "uid": i + 1, "pin_allowed": False,
                      "face_templates": [], "face_photos": [], "finger_templates": [synthetic_template(i)]}
                     for i in range(3)]
        roster_mod.install(tmp_path / "state", version=1, employees=employees)
        result = presensi("finger", "sync", "--json", config=cfg, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["added"] == 3 and len(emu.sim.library) == 3
        part = status_part(config_mod.load(cfg))
        assert part["ok"] and part["slots"] == 3
    part = status_part(config_mod.load(cfg))  # the emulator is gone: its pty disappeared with it
    assert not part["ok"] and "unplugged" in part["error"]


@pytest.mark.parametrize("fault", ["bad_checksum", "truncated", "stray55"])
def test_a_sync_broken_by_a_line_fault_resumes_where_it_stopped(rig, fault):
    from drivers.fingerprint.base import SensorError

    emu, sensor, slots = rig
    people = roster(30)

    def break_once(done, total):
        if done == 10:  # a fault that outlasts the driver's bounded retries of a garbled exchange
            emu.set_fault(fault, count=sensor.garble_retries + 1)

    with pytest.raises(SensorError):
        sync_slots(sensor, slots, people, progress=break_once)
    assert 10 <= len(slots.rows()) < 30
    report = sync_slots(sensor, slots, people)
    assert report.fault is None
    assert sensor_holds(emu, slots) == {emp: ts[0] for emp, ts in people}
    assert sorted(emu.sim.library) == sorted(slots.rows())  # nothing half-stored left behind


def test_the_demo_helper_punches_each_employee_by_finger_and_refuses_a_stranger(tmp_path):
    from terminal.app.demo_finger import run_fingerprint_demo
    from terminal.log import punchlog

    state = tmp_path / "state"
    state.mkdir()
    punchlog.init(state)
    lines = []
    with punchlog.PunchLog(state) as log:
        decisions = run_fingerprint_demo(state, log, ["EMP1", "EMP2"], say=lines.append)
        assert [d.reason for d in decisions] == ["matched", "matched", "no_match"]
        assert [(r["employee"], r["method"]) for r in log.records()] == [("EMP1", "finger"), ("EMP2", "finger")]
    assert "2 templates synced" in "\n".join(lines)
