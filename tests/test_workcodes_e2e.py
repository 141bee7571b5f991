"""A work code chosen at the terminal reaches every reader with the punch: the punch by PIN (`presensi punch
--work-code`), by face (a kiosk touch before the punch) and by finger (the fingerprint path's GPIO button on
gpiozero's mock pins, the emulator on a real pty driven by the unmodified pyfingerprint) all carry the same
code to the reference central server (push), to pyzk 0.9 over port 4370 (the raw 40-byte records: pyzk does
not expose the work code), to the unmodified django-fingerprint-attendance over ADMS, and into the zk-attlog
USB export, which a second reference server imports exactly once. Every employee id is an 18-digit NIP.

A real daemon runs in a thread (camera from a frame folder), so the test can press its button pin.
"""

from __future__ import annotations

import json
import struct
import threading
import time

import pytest
import requests
from conftest import presensi, wait_for
from test_adms import DjangoAdms

from drivers.fingerprint.emulator import FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
from sync.server.app import add_device
from sync.server.storage import open_store
from sync.wire.offline import parse_zk_line
from terminal import config, identity
from terminal.app import demo
from terminal.app.daemon import Daemon
from terminal.log import chain, punchlog

pytest.importorskip("skimage", reason="the sample face comes from scikit-image (the demo extra)")
from zk import ZK, const  # noqa: E402

FACE, FINGER, PIN = (e[0] for e in demo.EMPLOYEES)
DEVICE = "opd-kode-01"
SERIAL = "BKPSDM0001"
CODE = 3  # "Kembali dari izin": applies to every kind, so the test holds at any hour of any day
BUTTON = 23
VERIFY = {"face": 15, "finger": 1, "pin": 3}


def records(state) -> list[dict]:
    with punchlog.PunchLog(state, readonly=True) as log:
        return list(log.records())


@pytest.fixture
def site(tmp_path):
    """Central server, ADMS server, fingerprint emulator, and the terminal's configuration."""
    central = demo.CentralServer(tmp_path / "central.db").start()
    adms = DjangoAdms(tmp_path / "adms")
    adms.start()
    emu = FingerprintEmulator(Settings(capacity=162), link=tmp_path / "ttyFP")
    emu.start()
    state, frames = tmp_path / "state", tmp_path / "camera"
    frames.mkdir()
    punchlog.init(state)
    photo = demo.sample_photo()
    demo.publish_roster(central.app.store, photo)
    reg = add_device(central.app.store, DEVICE, chain.public_key_b64(identity.load_key(state)))
    cfg_path = tmp_path / "presensi.toml"
    cfg_path.write_text(f"""[device]
id = "{DEVICE}"
[paths]
state_dir = "{state}"
[central]
url = "{central.url}"
token = "{reg['token']}"
server_key = "{reg['server_key']}"
push_interval = 1.0
timeout = 2.0
max_backoff = 2.0
[web]
listen = "127.0.0.1:0"
[camera]
source = "{frames}"
fps = 10
[face]
workers = 1
[liveness]
mode = "off"
[fingerprint]
enabled = true
port = "{emu.path}"
[gpio]
enabled = true
pin_factory = "mock"
green_led = 5
red_led = 6
buzzer = 13
[zk]
enabled = true
listen = "127.0.0.1:0"
serial_number = "{SERIAL}"
[adms]
enabled = true
url = "{adms.url}"
delay = 1.0
error_delay = 1.0
[work_codes]
before_punch_seconds = 300.0
button_pin = {BUTTON}
""")
    yield {"config": cfg_path, "state": state, "frames": frames, "photo": photo, "emu": emu, "adms": adms,
           "central": central, "tmp": tmp_path}
    emu.stop()
    adms.kill()
    central.stop()


@pytest.fixture
def daemon(site):
    d = Daemon(config.load(str(site["config"])))
    thread = threading.Thread(target=d.run, name="daemon", daemon=True)
    thread.start()
    wait_for(lambda: d.web_port and "zk" in d.services, 60, "the daemon's web and ZK servers")
    yield d
    d.stop_event.set()
    thread.join(20)


def press(daemon, times: int) -> None:
    """Press the work-code button on its mock pin (pull-up: pressed = low)."""
    pin = daemon.work_code_button.button.pin
    for _ in range(times):
        pin.drive_low()
        time.sleep(0.08)  # past the button's bounce time
        pin.drive_high()
        time.sleep(0.08)


def raw_attendance(port: int) -> tuple[list, list[tuple]]:
    """pyzk's own parse, and the 40-byte records it reads, decoded here: (uid, user_id, verify, state, code)."""
    conn = ZK("127.0.0.1", port=port, ommit_ping=True, timeout=10).connect()
    try:
        parsed = conn.get_attendance()
        data, size = conn.read_with_buffer(const.CMD_ATTLOG_RRQ)
    finally:
        conn.disconnect()
    total = struct.unpack_from("<I", data)[0]
    assert total == size - 4 and total % 40 == 0
    out = []
    for off in range(4, 4 + total, 40):
        uid, user_id, verify, _t, state, code = struct.unpack_from("<H24sBIBI", data, off)
        out.append((uid, user_id.rstrip(b"\0").decode(), verify, state, code))
    return parsed, out


def test_a_work_code_punch_by_pin_face_and_finger_reaches_every_reader(site, daemon):
    s = site
    # the roster (with the face and the finger) arrives from the central server; the slots follow
    wait_for(lambda: (s["state"] / "fingerslots.db").exists(), 60, "the fingerprint slot map")

    pin = presensi("punch", "--employee", PIN, "--method", "pin", "--work-code", str(CODE), "--json",
                   config=s["config"])
    assert pin.returncode == 0, pin.stderr
    assert json.loads(pin.stdout)["details"]["work_code"] == CODE

    base = f"http://127.0.0.1:{daemon.web_port}"
    armed = requests.post(base + "/kiosk/work-code", json={"code": CODE}, timeout=10)
    assert armed.status_code == 200 and armed.json()["label"] == "Kembali dari izin"
    demo.make_frames(s["photo"], s["frames"], fps=10)  # the employee steps in front of the camera
    face = wait_for(lambda: [r for r in records(s["state"]) if r["method"] == "face"], 90, "a face punch")

    press(daemon, CODE)  # 1, 2, 3: the button steps through the codes
    assert daemon.punches.chooser.peek()["code"] == CODE
    s["emu"].place_finger(synthetic_template(f"demo:{FINGER}"), score=140)
    finger = wait_for(lambda: [r for r in records(s["state"]) if r["method"] == "finger"], 60, "a finger punch")
    s["emu"].remove_finger()

    log = records(s["state"])
    assert [(r["employee"], r["method"]) for r in log] == [(PIN, "pin"), (FACE, "face"), (FINGER, "finger")]
    assert face[0]["employee"] == FACE and finger[0]["employee"] == FINGER
    assert all(r["details"]["work_code"] == CODE for r in log)  # inside the hash chain
    assert presensi("log", "verify", config=s["config"]).returncode == 0

    # the central server, by push
    store = open_store(str(s["tmp"] / "central.db"))
    wait_for(lambda: store.punch_count(DEVICE) == 3, 60, "delivery to the central server")
    listed = [json.loads(line) for line in
              presensi("server", "punches", "--db", s["tmp"] / "central.db", "--json").stdout.splitlines()]
    assert [(r["employee"], r["method"], r["work_code"]) for r in listed] == [
        (PIN, "pin", CODE), (FACE, "face", CODE), (FINGER, "finger", CODE)]
    assert not store.alarms(DEVICE)

    # pyzk 0.9 over port 4370: its parse (18-digit user_id, verify) and the work code in the raw record
    parsed, raw = raw_attendance(daemon.services["zk"].port)
    assert [(a.user_id, a.status) for a in parsed] == [(PIN, 3), (FACE, 15), (FINGER, 1)]
    assert [(user_id, verify, code) for _uid, user_id, verify, _state, code in raw] == [
        (PIN, 3, CODE), (FACE, 15, CODE), (FINGER, 1, CODE)]
    assert [a.punch for a in parsed] == [state for *_, state, _code in raw]

    # django-fingerprint-attendance over ADMS
    adms_rows = wait_for(lambda: (rows := s["adms"].query(
        "SELECT raw_pin, work_code, verify_mode FROM fingerprint_attendance_punch ORDER BY id")) and len(rows) == 3
        and rows, 60, "three ATTLOG punches on the ADMS server")
    assert adms_rows == [(PIN, str(CODE), 3), (FACE, str(CODE), 15), (FINGER, str(CODE), 1)]

    # the zk-attlog USB export, read by its own rule (tab-separated, five fields), and a regional server
    # that imports the stick exactly once
    stick = s["tmp"] / "usb"
    out = json.loads(presensi("export", "--to", stick, "--format", "zk-attlog", "--after-seq", "0", "--json",
                              config=s["config"]).stdout)
    lines = (stick / out["dir"].rsplit("/", 1)[-1] / f"{SERIAL}_attlog.dat").read_text().splitlines()
    fields = [line.split("\t") for line in lines]
    assert [(f[0], f[2], f[4]) for f in fields] == [(PIN, "3", "3"), (FACE, "15", "3"), (FINGER, "1", "3")]
    assert [parse_zk_line(line)["state"] for line in lines] == [state for *_, state, _code in raw]
    regional = s["tmp"] / "regional.db"
    key = chain.public_key_b64(identity.load_key(s["state"]))
    presensi("server", "add-device", DEVICE, "--public-key", key, "--db", regional)
    first = json.loads(presensi("server", "import", stick, "--db", regional, "--json").stdout)
    again = json.loads(presensi("server", "import", stick, "--db", regional, "--json").stdout)
    assert (first["stored"], first["zk_attlog_lines"], again["stored"], again["duplicates"]) == (3, 3, 0, 3)
    imported = [json.loads(line) for line in
                presensi("server", "punches", "--db", regional, "--json").stdout.splitlines()]
    assert [(r["employee"], r["work_code"]) for r in imported] == [(PIN, CODE), (FACE, CODE), (FINGER, CODE)]
