"""The fingerprint driver over the unmodified pyfingerprint, against the emulator on a real pty: each line
fault is reported while it lasts, recovery comes by itself within 5 s of the fault clearing, and no punch
comes from a corrupted exchange. Also the CLI's info/scan/enroll and its error on a silent sensor."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import presensi, write_config

from drivers.fingerprint.base import SensorError
from drivers.fingerprint.capture import CaptureLoop
from drivers.fingerprint.emulator import FAULTS, FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
from drivers.fingerprint.registry import from_config
from terminal.config import Fingerprint
from terminal.finger.punch import capture_handler
from terminal.finger.slots import SlotMap, template_hash
from terminal.log import punchlog

EMPLOYEE = "198501012010011001"


@pytest.fixture
def emulator(tmp_path):
    with FingerprintEmulator(Settings(capacity=200), link=tmp_path / "ttyFP", paced=True, late_seconds=2.5) as emu:
        emu.sim.store(7, synthetic_template(EMPLOYEE))
        yield emu


def wait_for(predicate, timeout: float, step: float = 0.02) -> float | None:
    """Seconds until predicate() held, or None if it never did within timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


def test_open_reads_the_system_parameters(emulator):
    sensor = from_config(Fingerprint(port=emulator.path))
    assert sensor.info() == {"capacity": 200, "templates": 1, "security_level": 3, "packet_size": 128,
                             "baud": 57600}
    assert sensor.health()["state"] == "ok"
    sensor.close()


def test_a_silent_sensor_fails_fast_with_the_port_and_usual_causes(emulator):
    emulator.set_fault("hang")
    sensor = from_config(Fingerprint(port=emulator.path))
    started = time.monotonic()
    with pytest.raises(SensorError) as e:
        sensor.open()
    assert time.monotonic() - started < 3  # pyfingerprint alone waits 24 s
    assert emulator.path in str(e.value) and "wiring" in str(e.value) and "Bluetooth" in str(e.value)
    assert e.value.category == "unreachable" and sensor.health()["state"] == "fault"


def test_a_wrong_password_is_a_configuration_fault(tmp_path):
    with FingerprintEmulator(Settings(password=42), link=tmp_path / "fp", paced=False) as emu:
        with pytest.raises(SensorError, match=r"password") as e:
            from_config(Fingerprint(port=emu.path, password=7)).open()
        assert e.value.category == "password"
        assert from_config(Fingerprint(port=emu.path, password=42)).open()["capacity"] == 1000


@pytest.fixture
def punching(emulator, tmp_path):
    """A capture loop feeding the real punch log through the slot map, as the daemon wires it."""
    state = tmp_path / "state"
    state.mkdir()
    punchlog.init(state)
    log = punchlog.PunchLog(state)
    slots = SlotMap(state)
    slots.assign(7, EMPLOYEE, template_hash(synthetic_template(EMPLOYEE)))
    health_events = []
    sensor = from_config(Fingerprint(port=emulator.path), on_health=health_events.append)
    decisions = []
    loop = CaptureLoop(sensor, capture_handler(log, slots, min_score=50, on_decision=decisions.append),
                       backoff_max=1.0)
    loop.start()
    yield emulator, sensor, log, decisions, health_events
    loop.stop()
    sensor.close()
    slots.close()
    log.close()


def test_a_finger_punch_lands_in_the_log_with_method_and_score(punching):
    emulator, sensor, log, decisions, _ = punching
    emulator.place_finger(synthetic_template(EMPLOYEE), score=143)
    assert wait_for(lambda: log.count() == 1, 5) is not None
    record = log.get(1)
    assert record["employee"] == EMPLOYEE and record["method"] == "finger"
    assert record["details"] == {"score": 143, "slot": 7}
    time.sleep(0.5)
    assert log.count() == 1  # one touch, one punch: the finger must be lifted first
    lift_finger(emulator)  # the finger is lifted, then another one touches
    emulator.place_unknown_finger()
    assert wait_for(lambda: any(d.reason == "no_match" for d in decisions), 5) is not None
    assert log.count() == 1
    assert log.verify() == []


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_reported_and_recovered_without_a_corrupted_punch(punching, fault):
    emulator, sensor, log, decisions, health_events = punching
    assert wait_for(lambda: sensor.health()["state"] == "ok", 5) is not None
    emulator.set_fault(fault)
    emulator.place_finger(synthetic_template(EMPLOYEE), score=99)
    assert wait_for(lambda: sensor.health()["state"] == "fault", 10) is not None, "fault never reported"
    first_fault = len(health_events)
    time.sleep(1.5)  # the fault lasts: still reported, nothing punched
    health = sensor.health()
    assert health["state"] == "fault" and health["fault"] and emulator.path in health["fault"]
    assert all(e["state"] == "fault" for e in health_events[first_fault - 1:]), "reported ok during the fault"
    assert log.count() == 0 and decisions == []
    emulator.clear_fault(fault)
    recovered = wait_for(lambda: sensor.health()["state"] == "ok", 10)
    assert recovered is not None and recovered < 5, f"recovered after {recovered} s"
    assert wait_for(lambda: log.count() == 1, 5) is not None  # the finger still on the glass now punches
    assert log.get(1)["details"] == {"score": 99, "slot": 7}
    assert [e["state"] for e in health_events][-2:] == ["fault", "ok"]
    assert sensor.health()["recoveries"] >= 1


def test_the_capture_loop_never_blocks_its_caller(emulator):
    emulator.set_fault("hang")
    loop = CaptureLoop(from_config(Fingerprint(port=emulator.path)), lambda capture: None)
    started = time.monotonic()
    loop.start()
    assert time.monotonic() - started < 0.5
    loop.stop(timeout=5)


def test_late_replies_do_not_shift_later_exchanges(emulator):
    sensor = from_config(Fingerprint(port=emulator.path))
    sensor.open()
    emulator.set_fault("late", count=1)
    with pytest.raises(SensorError):
        sensor.call("getTemplateCount")
    time.sleep(1.6)  # the late reply arrives while the driver is disconnected or draining
    assert sensor.info()["templates"] == 1
    emulator.place_finger(synthetic_template(EMPLOYEE), score=88)
    captures = [sensor.capture() for _ in range(3)]
    assert all(c is not None and (c.slot, c.score) == (7, 88) for c in captures)


# --- the command line ------------------------------------------------------------------------------------------

def test_cli_info_scan_and_enrol(tmp_path):
    with FingerprintEmulator(Settings(capacity=162), link=tmp_path / "fp", paced=True) as emu:
        cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state", f'\n[fingerprint]\nport = "{emu.path}"\n')
        assert presensi("init", config=cfg).returncode == 0
        info = presensi("finger", "info", "--json", config=cfg, timeout=30)
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout) == {"capacity": 162, "templates": 0, "security_level": 3, "packet_size": 128,
                                           "baud": 57600}
        finger = synthetic_template("enrolee")
        steps = threading.Thread(target=_play_enrolment, args=(emu, finger), daemon=True)
        steps.start()
        enrolled = presensi("finger", "enroll", "--employee", EMPLOYEE, "--json", config=cfg, timeout=60)
        assert enrolled.returncode == 0, enrolled.stderr
        result = json.loads(enrolled.stdout)
        assert result["employee"] == EMPLOYEE and result["slot"] == 0
        assert "Angkat jari" in enrolled.stderr
        emu.place_finger(finger, score=77)
        scan = presensi("finger", "scan", "--json", config=cfg, timeout=30)
        assert scan.returncode == 0, scan.stderr
        assert json.loads(scan.stdout) == {"slot": 0, "score": 77, "employee": EMPLOYEE}
        emu.place_unknown_finger()
        scan = presensi("finger", "scan", "--json", "--port", emu.path, timeout=30)  # no config needed
        assert json.loads(scan.stdout) == {"slot": None, "score": None, "employee": None}


def lift_finger(emu, timeout: float = 20) -> None:
    """Lift the finger and wait until the client has seen the sensor empty (a person waits for that too)."""
    seen = emu.sim.empty_reads
    emu.remove_finger()
    assert wait_for(lambda: emu.sim.empty_reads > seen, timeout) is not None, "the client never saw the finger lifted"


def _play_enrolment(emu, finger):
    """A person at the sensor: finger on when it waits, lift when the sensor has read it, finger on again."""
    lift_finger(emu, 60)  # the enrol command has started and polls the empty sensor
    emu.place_finger(finger)
    wait_for(lambda: emu.sim.buffers[1] is not None, 20)
    lift_finger(emu)
    emu.place_finger(finger)


def test_cli_names_the_port_and_causes_within_10_s_when_the_sensor_is_silent(tmp_path):
    with FingerprintEmulator(link=tmp_path / "fp") as emu:
        emu.set_fault("hang")
        started = time.monotonic()
        result = presensi("finger", "info", "--port", emu.path, timeout=30)
        elapsed = time.monotonic() - started
    assert result.returncode != 0 and elapsed < 10
    assert emu.path in result.stderr and "baud" in result.stderr and "serial console" in result.stderr


def test_cli_reports_a_missing_port(tmp_path):
    result = presensi("finger", "info", "--port", str(tmp_path / "nothing"), timeout=30)
    assert result.returncode != 0 and "unplugged" in result.stderr and str(tmp_path / "nothing") in result.stderr


def test_the_service_punches_gives_feedback_and_blinks_red_while_the_sensor_is_in_fault(emulator, tmp_path):
    from gpiozero.pins.mock import MockFactory

    from drivers.gpio import Feedback
    from terminal.config import Fingerprint
    from terminal.finger.service import FingerprintService

    state = tmp_path / "state"
    state.mkdir()
    punchlog.init(state)
    factory = MockFactory()
    decisions = []
    with punchlog.PunchLog(state) as log, Feedback(pin_factory=factory) as feedback:
        service = FingerprintService(Fingerprint(enabled=True, port=emulator.path), state, log, feedback=feedback,
                                     on_decision=decisions.append)
        try:
            service.start()
            report = service.sync([(EMPLOYEE, [synthetic_template(EMPLOYEE)])])
            assert report.fault is None and report.repaired  # slot 7 was unknown to the map: replaced
            emulator.place_finger(synthetic_template(EMPLOYEE), score=120)
            assert wait_for(lambda: log.count() == 1, 5) is not None
            assert wait_for(lambda: factory.pin(17).state, 2)  # green
            assert wait_for(lambda: decisions, 2) is not None
            assert decisions[0].employee == EMPLOYEE and service.health()["ok"]
            emulator.set_fault("unplugged")
            assert wait_for(lambda: not service.health()["ok"], 5) is not None
            assert wait_for(lambda: factory.pin(27).state, 3)  # red blinks while in fault
            emulator.clear_fault("unplugged")
            assert wait_for(lambda: service.health()["ok"], 5) is not None
        finally:
            service.stop()


def test_the_r503_ring_led_command_goes_through_the_unmodified_library(emulator):
    sensor = from_config(Fingerprint(port=emulator.path))
    sensor.set_led(control=1, colour=4, speed=0x40, count=0)  # green breathing
    assert emulator.sim.led == (1, 0x40, 4, 0)
    emulator.sim.force_code(0x35, 0x01)
    with pytest.raises(SensorError, match="LED"):
        sensor.set_led(control=3, colour=1)
    sensor.close()


def test_through_the_punch_service_a_finger_punch_gets_its_kind_and_a_repeat_is_not_recorded_twice(
        emulator, tmp_path):
    from terminal import config as config_mod
    from terminal.punch.service import PunchService

    state = tmp_path / "state"
    state.mkdir()
    punchlog.init(state)
    cfg = config_mod.from_dict({"device": {"id": "t-01"}, "paths": {"state_dir": str(state)}})
    with punchlog.PunchLog(state) as log, SlotMap(state) as slots:
        slots.assign(7, EMPLOYEE, template_hash(synthetic_template(EMPLOYEE)))
        decisions = []
        loop = CaptureLoop(from_config(Fingerprint(port=emulator.path)),
                           capture_handler(PunchService(cfg, log), slots, 50, on_decision=decisions.append))
        loop.start()
        try:
            for _ in range(2):  # touch, lift, touch again
                emulator.place_finger(synthetic_template(EMPLOYEE), score=111)
                assert wait_for(lambda n=len(decisions): len(decisions) == n + 1, 5) is not None
                lift_finger(emulator)
        finally:
            loop.stop()
        assert log.count() == 1  # the second touch is acknowledged as a repeat, not recorded again
        record = log.get(1)
        assert record["method"] == "finger" and record["details"]["score"] == 111 and record["details"]["slot"] == 7
        assert decisions[0].outcome.recorded and not decisions[1].outcome.recorded
        assert decisions[1].outcome.acknowledged


def test_a_second_program_on_the_port_is_refused_instead_of_garbling_the_line(emulator):
    first = from_config(Fingerprint(port=emulator.path))
    first.open()
    second = from_config(Fingerprint(port=emulator.path))
    with pytest.raises(SensorError, match="in use by another program") as e:
        second.open()
    assert e.value.category == "busy"
    assert first.info()["templates"] == 1  # the first user was not disturbed
    first.close()
    assert second.info()["templates"] == 1
    second.close()


# --- a garbled exchange is flushed and retried (issue 16) -------------------------------------------------------

def test_three_stray_bytes_before_the_first_ack_do_not_stop_the_power_up_handshake(emulator):
    emulator.set_fault("garbage3", count=1)  # the very first reply (VfyPwd) starts with 3 stray bytes
    health_events = []
    sensor = from_config(Fingerprint(port=emulator.path), on_health=health_events.append)
    assert sensor.info()["templates"] == 1
    assert emulator.faults == {}, "the garbled reply was never sent"
    assert sensor.health()["state"] == "ok" and sensor.health()["garbled"] == 1
    assert [e["state"] for e in health_events] == ["ok"], "a retried garble was reported as a fault"
    sensor.close()


def test_noise_during_capture_is_retried_and_the_daemon_punch_still_lands(punching):
    emulator, sensor, log, decisions, health_events = punching
    assert wait_for(lambda: sensor.health()["state"] == "ok", 5) is not None
    before = len(health_events)
    emulator.set_fault("garbage3", count=1)
    emulator.place_finger(synthetic_template(EMPLOYEE), score=91)
    assert wait_for(lambda: log.count() == 1, 5) is not None
    assert log.get(1)["details"] == {"score": 91, "slot": 7}
    assert emulator.faults == {} and sensor.health()["garbled"] >= 1
    assert all(e["state"] == "ok" for e in health_events[before:]), "a retried garble was reported as a fault"


def test_a_garble_that_persists_is_still_a_fault_after_a_bounded_number_of_tries(emulator):
    sensor = from_config(Fingerprint(port=emulator.path))
    sensor.open()
    emulator.set_fault("garbage3")
    started = time.monotonic()
    with pytest.raises(SensorError, match="valid header") as e:
        sensor.call("getTemplateCount")
    assert e.value.category == "protocol" and time.monotonic() - started < 10
    assert sensor.health()["state"] == "fault"
    emulator.clear_fault("garbage3")
    assert sensor.call("getTemplateCount") == 1


def test_cli_finger_scan_survives_three_stray_bytes_before_the_first_ack(tmp_path):
    with FingerprintEmulator(Settings(capacity=200), link=tmp_path / "fp", paced=True) as emu:
        emu.sim.store(7, synthetic_template(EMPLOYEE))
        emu.place_finger(synthetic_template(EMPLOYEE), score=66)
        emu.set_fault("garbage3", count=1)
        scan = presensi("finger", "scan", "--json", "--port", emu.path, timeout=30)
        assert scan.returncode == 0, scan.stderr
        assert json.loads(scan.stdout) == {"slot": 7, "score": 66, "employee": None}
        assert emu.faults == {}
