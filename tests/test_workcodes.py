"""Work codes as the commands, the files and the protocols carry them: `presensi punch --work-code` (and its
refusals), [work_codes] in the configuration, the zk-attlog USB export read field by field by a reader written
here and imported by the reference server exactly once, the tampered sticks it refuses, and the forgeries a LAN
attacker would try over the push API and ZK port 4370. The fingerprint path's button runs on gpiozero's mock
pins. Real SQLite files, real processes, real HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import presensi, write_config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from synctools import make_terminal, serve_in_thread, signed_post
from zk import ZK

from sync.device import push
from sync.device.zk.server import serve_zk
from sync.server.app import add_device, make_app
from terminal import config, identity
from terminal.app.daemon import Daemon
from terminal.log import chain, punchlog
from terminal.punch import roster, workcodes
from terminal.punch.service import PunchService
from terminal.timing import clock

WIB = dt.timezone(dt.timedelta(hours=7))
MONDAY = dt.datetime(2026, 3, 2, tzinfo=WIB)  # a working Monday
NIPS = ("198501012010011001", "199002022015021002", "198803032012031003")
SERIAL = "ZKSN-0042"
APEL_ONLY = '[work_codes]\ncodes = [{ code = 7, label = "Apel khusus", kinds = ["apel"] }, { code = 3, label = ' \
            '"Kembali dari izin", kinds = [] }]\n'


def reading_at(local: dt.datetime) -> clock.ClockReading:
    """A clock reading whose wall clock says `local` (no time sample: kinds follow the wall clock)."""
    base = clock.read()
    return clock.ClockReading(base.boot_id, base.monoraw_ns, base.boottime_ns, int(local.timestamp() * 1e9),
                              base.timex_status, base.maxerror_us)


def count(state) -> int:
    with punchlog.PunchLog(state, readonly=True) as log:
        return log.count()


# -- the command and the configuration ----------------------------------------------------------------------


def test_punch_command_records_the_code_and_refuses_unknown_or_inapplicable_ones(tmp_path):
    cfg = write_config(tmp_path / "p.toml", tmp_path / "state", APEL_ONLY)
    assert presensi("init", config=cfg).returncode == 0
    ok = presensi("punch", "--employee", NIPS[0], "--method", "pin", "--work-code", "3", "--json", config=cfg)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["details"] == {"operator": "cli", "work_code": 3}

    unknown = presensi("punch", "--employee", NIPS[1], "--method", "pin", "--work-code", "9", config=cfg)
    assert unknown.returncode == 1
    assert "unknown work code 9; the codes are: 7 Apel khusus, 3 Kembali dari izin" in unknown.stderr
    assert "the punch was NOT recorded" in unknown.stderr
    # the default schedule has no apel window: code 7 applies to no punch made now
    wrong_kind = presensi("punch", "--employee", NIPS[2], "--method", "pin", "--work-code", "7", config=cfg)
    assert wrong_kind.returncode == 1 and "work code 7 (Apel khusus) applies to apel, not to" in wrong_kind.stderr
    assert count(tmp_path / "state") == 1
    assert presensi("log", "verify", config=cfg).returncode == 0


@pytest.mark.parametrize("codes,text", [
    ('[{ code = 1, label = "A" }, { code = 1, label = "B" }]', "code 1 appears twice"),
    ('[{ code = 0, label = "Nol" }]', "greater than or equal to 1"),
    ('[{ code = 2, label = "X", kinds = ["lembur"] }]', "kinds.0: Input should be 'apel', 'masuk', 'istirahat' or"),
    ('[{ code = 2 }]', "label: Field required"),
    ('["Dinas Luar"]', "codes.0 must be a table"),
], ids=["duplicate", "zero", "unknown-kind", "no-label", "not-a-table"])
def test_config_check_names_a_bad_work_code_list(tmp_path, codes, text):
    cfg = write_config(tmp_path / "p.toml", tmp_path / "state", f"[work_codes]\ncodes = {codes}\n")
    out = presensi("config", "check", config=cfg)
    assert out.returncode == 2 and "[work_codes] codes" in out.stderr and text in out.stderr, out.stderr


def test_service_takes_a_code_only_for_the_kinds_it_applies_to(tmp_path):
    punchlog.init(tmp_path / "state")
    cfg = config.from_dict({"device": {"id": "svc-01"}, "paths": {"state_dir": str(tmp_path / "state")}})
    with punchlog.PunchLog(cfg.state_dir) as log:
        service = PunchService(cfg, log)
        masuk = service.punch(NIPS[0], "pin", work_code=1, reading=reading_at(MONDAY.replace(hour=7)))
        assert masuk.recorded and masuk.kind == "masuk" and masuk.record["details"]["work_code"] == 1
        assert masuk.message.endswith("· 1 Dinas Luar")
        lembur = service.punch(NIPS[1], "pin", work_code=4, reading=reading_at(MONDAY.replace(hour=7, minute=5)))
        assert lembur.refused and not lembur.recorded
        assert lembur.message == "Kode kerja 4 Lembur tidak berlaku untuk Masuk"
        pulang = service.punch(NIPS[1], "pin", work_code=4, reading=reading_at(MONDAY.replace(hour=16, minute=30)))
        assert pulang.recorded and pulang.kind == "pulang" and pulang.record["details"]["work_code"] == 4
        assert log.count() == 2 and not log.verify()


def test_a_code_chosen_before_expires_and_is_used_once():
    now = [100.0]
    chooser = workcodes.Chooser(20.0, clock=lambda: now[0])
    chooser.arm(2, "kiosk")
    now[0] += 19.0
    assert chooser.peek()["code"] == 2 and chooser.take() == 2 and chooser.take() is None
    chooser.arm(3, "button")
    now[0] += 20.5
    assert chooser.peek() is None and chooser.take() is None


def test_the_fingerprint_button_on_mock_pins_steps_through_the_codes_for_the_next_finger(tmp_path):
    """gpiozero's MockFactory pin of [work_codes] button_pin: each press selects the next code (after the last:
    none); the next finger punch takes it and the kiosk is told."""
    state = tmp_path / "state"
    punchlog.init(state)
    roster.install(state, version=1, employees=[{"id": NIPS[0], "name": "Sri Wahyuni", "uid": 1}])
    cfg = config.from_dict({"device": {"id": "btn-01"}, "paths": {"state_dir": str(state)},
                            "gpio": {"enabled": True, "pin_factory": "mock"},
                            "work_codes": {"button_pin": 23}})
    daemon = Daemon(cfg)
    daemon.open_log()
    daemon.start_feedback()
    daemon.start_punch_service()
    events = daemon.events.subscribe()
    try:
        pin = daemon.work_code_button.button.pin
        shown = []
        for _ in range(5):  # 1, 2, 3, 4, none
            pin.drive_low()
            pin.drive_high()
            shown.append(_next_event(events, "workcode-armed")["code"])
        assert shown == [1, 2, 3, 4, None] and daemon.punches.chooser.peek() is None
        pin.drive_low()
        pin.drive_high()  # 1 Dinas Luar
        assert _next_event(events, "workcode-armed") == {"code": 1, "label": "Dinas Luar", "seconds": 20.0,
                                                         "source": "button"}
        outcome = daemon.punches.punch(NIPS[0], "finger", details={"slot": 1, "score": 150},
                                       reading=reading_at(MONDAY.replace(hour=7, minute=10)))
        assert outcome.recorded and outcome.record["details"]["work_code"] == 1
        assert _next_event(events, "decision")["work_code"] == 1
        assert daemon.punches.chooser.peek() is None  # used up
    finally:
        daemon.events.unsubscribe(events)
        daemon.work_code_button.close()
        if daemon.feedback:
            daemon.feedback.close()
        daemon.log.close()


def _next_event(q, type_: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = q.get(timeout=max(0.01, deadline - time.monotonic()))
        if event.type == type_:
            return event.data
    raise AssertionError(f"no {type_} event within {timeout} s")


def test_an_offer_that_runs_out_records_the_punch_without_a_code(tmp_path):
    punchlog.init(tmp_path / "state")
    cfg = config.from_dict({"device": {"id": "svc-02"}, "paths": {"state_dir": str(tmp_path / "state")}})
    published = []
    with punchlog.PunchLog(cfg.state_dir) as log:
        service = PunchService(cfg, log)
        service.choices = workcodes.ChoiceWindow(service.work_codes, 0.3, lambda t, d: published.append((t, d)))
        outcome = service.punch(NIPS[2], "face", reading=reading_at(MONDAY.replace(hour=7, minute=20)))
    assert outcome.recorded and "work_code" not in outcome.record["details"]
    assert [t for t, _ in published] == ["workcode", "workcode-closed"]
    assert [c["code"] for c in published[0][1]["codes"]] == [1, 2, 3]  # Lembur is for pulang only
    assert published[1][1]["chosen"] is None


# -- the zk-attlog USB export -----------------------------------------------------------------------------

PUNCHES = [  # employee, method, kind, local time (WIB), work code
    (NIPS[0], "face", "masuk", MONDAY.replace(hour=7, minute=2, second=11), 1),
    (NIPS[1], "finger", "masuk", MONDAY.replace(hour=7, minute=31, second=5), None),
    (NIPS[2], "pin", "istirahat", MONDAY.replace(hour=12, minute=0, second=59), 2),
    (NIPS[0], "face", "pulang", MONDAY.replace(hour=16, minute=45, second=0), 4),
]
STATE = {"masuk": 0, "pulang": 1, "istirahat": 2}
VERIFY = {"face": 15, "finger": 1, "pin": 3}


@pytest.fixture
def stick(tmp_path):
    """A terminal with PUNCHES in its log, a registered central server, and its zk-attlog export."""
    app = make_app(str(tmp_path / "central.db"))
    state = tmp_path / "state"
    punchlog.init(state)
    with punchlog.PunchLog(state) as log:
        for emp, method, kind, local, code in PUNCHES:
            log.append(emp, method, kind=kind, details={} if code is None else {"work_code": code},
                       reading=reading_at(local))
    cfg = write_config(tmp_path / "p.toml", state, f'[zk]\nserial_number = "{SERIAL}"\n', device_id="opd-usb-01")
    add_device(app.store, "opd-usb-01", chain.public_key_b64(identity.load_key(state)))
    app.store.close()
    out = json.loads(presensi("export", "--to", str(tmp_path / "usb"), "--format", "zk-attlog", "--json",
                              config=cfg).stdout)
    folder = Path(out["dir"])
    return {"folder": folder, "attlog": folder / f"{SERIAL}_attlog.dat", "db": tmp_path / "central.db",
            "state": state, "usb": tmp_path / "usb", "out": out}


def read_attlog(path: Path) -> list[dict]:
    """An independent reader of the ZK attendance file: UTF-8, one punch a line, five tab-separated fields."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    rows = []
    for line in raw.decode("utf-8").split("\n")[:-1]:
        pin, when, verify, state, code = line.split("\t")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when)
        rows.append({"pin": pin, "time": when, "verify": int(verify), "state": int(state), "work_code": int(code)})
    return rows


def test_the_zk_attlog_file_field_by_field_and_imported_exactly_once(stick):
    assert stick["attlog"].name == f"{SERIAL}_attlog.dat"
    assert stick["out"]["format"] == "presensi-zk-attlog/1" and stick["out"]["count"] == 4
    assert read_attlog(stick["attlog"]) == [
        {"pin": emp, "time": f"{local:%Y-%m-%d %H:%M:%S}", "verify": VERIFY[method], "state": STATE[kind],
         "work_code": code or 0} for emp, method, kind, local, code in PUNCHES]
    assert all(len(r["pin"]) == 18 for r in read_attlog(stick["attlog"]))  # the NIP, never shortened
    manifest = json.loads((stick["folder"] / "manifest.json").read_text())
    assert manifest["zk_attlog"]["file"] == stick["attlog"].name and manifest["zk_attlog"]["lines"] == 4
    assert set(manifest["files"]) >= {stick["attlog"].name, "punches.jsonl"}

    first = json.loads(presensi("server", "import", str(stick["usb"]), "--db", str(stick["db"]), "--json").stdout)
    assert (first["stored"], first["duplicates"], first["zk_attlog_lines"]) == (4, 0, 4)
    again = json.loads(presensi("server", "import", str(stick["usb"]), "--db", str(stick["db"]), "--json").stdout)
    assert (again["stored"], again["duplicates"]) == (0, 4)
    listing = presensi("server", "punches", "--db", str(stick["db"]), "--json").stdout
    rows = [json.loads(x) for x in listing.splitlines()]
    assert [(r["employee"], r["work_code"]) for r in rows] == [(p[0], p[4]) for p in PUNCHES]
    assert presensi("server", "alarms", "--db", str(stick["db"])).stdout.strip() == "no alarms"


def _refused(stick, text: str) -> None:
    out = presensi("server", "import", str(stick["usb"]), "--db", str(stick["db"]))
    assert out.returncode == 1 and text in out.stderr, out.stderr
    assert presensi("server", "punches", "--db", str(stick["db"])).stdout.strip() == ""  # nothing stored


@pytest.mark.parametrize("change", ["line-changed", "line-added", "line-removed"])
def test_a_tampered_zk_attlog_file_is_refused_and_nothing_is_stored(stick, change):
    text = stick["attlog"].read_text()
    lines = text.splitlines(keepends=True)
    if change == "line-changed":  # Dinas Luar for the finger punch that had no code
        lines[1] = lines[1][:-2] + "1\n"
    elif change == "line-added":
        lines.append(f"{NIPS[1]}\t2026-03-02 16:50:00\t1\t1\t1\n")
    else:
        del lines[2]
    stick["attlog"].write_text("".join(lines))
    _refused(stick, "content does not match the signed manifest (a line was changed, added or removed)")


def test_an_attlog_line_that_disagrees_with_its_record_is_refused_even_when_signed(stick):
    """A terminal bug (or the device key in the wrong hands) signing a file whose line says something the
    hashed record does not: the server recomputes each line from its record and refuses the stick."""
    lines = stick["attlog"].read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("\t4\n", "\t1\n")  # pulang with Lembur shown as Dinas Luar
    stick["attlog"].write_text("".join(lines))
    manifest_path = stick["folder"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    import hashlib

    manifest["files"][stick["attlog"].name]["sha256"] = hashlib.sha256(stick["attlog"].read_bytes()).hexdigest()
    raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
    manifest_path.write_bytes(raw)
    (stick["folder"] / "manifest.sig").write_text(chain.sign_b64(identity.load_key(stick["state"]), raw))
    _refused(stick, "line 4: does not match punch seq 4: work_code 1 (the record says 4)")


# -- forged work codes over the push API and ZK port 4370 ---------------------------------------------------


def test_a_forged_work_code_over_the_push_api_does_not_count(tmp_path):
    app = make_app(str(tmp_path / "central.db"))
    reg = add_device(app.store, "dev-01")
    with serve_in_thread(app) as url:
        _, cfg = make_terminal(tmp_path, url, reg)
        with punchlog.PunchLog(cfg.state_dir) as log:
            log.append(NIPS[0], "pin", details={"work_code": 2})
            log.append(NIPS[1], "pin", details={})
        pusher = push.Pusher(cfg.state_dir, push.Settings.from_config(cfg))
        body, _ = pusher.build_batch(0)
        forged = json.loads(json.dumps(body))
        forged["records"][1]["details"]["work_code"] = 1  # Dinas Luar added to a punch that had none
        raw = json.dumps(forged).encode()
        path = "/api/v1/devices/dev-01/punches"
        unsigned = signed_post(url, path, raw, reg["token"], None)
        foreign = signed_post(url, path, raw, reg["token"], Ed25519PrivateKey.generate())
        assert (unsigned.status_code, foreign.status_code) == (401, 403), (unsigned.text, foreign.text)
        assert app.store.punch_count("dev-01") == 0
        # even signed by the device itself, the changed record fails its hash: kept aside as edited, alarmed
        r = signed_post(url, path, raw, reg["token"], identity.load_key(cfg.state_dir),
                        enrolment_code=reg.get("enrolment_code"))
        assert r.status_code == 200, r.text
        stored = {p["seq"]: p for p in app.store.iter_punches("dev-01")}
        assert json.loads(stored[2]["problems"]) == ["edited"]
        assert json.loads(stored[1]["problems"]) == [] and json.loads(stored[1]["details"])["work_code"] == 2
        # the refused attempts are alarmed too, so the regency sees someone tried
        assert sorted(a["kind"] for a in app.store.alarms("dev-01")) == ["edited", "not-enrolled", "unsigned"]
        pusher.close()


def test_zk_clients_cannot_write_a_work_code(tmp_path):
    """Port 4370 is read-only for punches: a client uploading a 40-byte attendance record with a work code
    (PREPARE_DATA/DATA, as ZK SDKs upload tables) or sending option writes changes nothing a reader sees."""
    state = tmp_path / "state"
    punchlog.init(state)
    with punchlog.PunchLog(state) as log:
        log.append(NIPS[0], "pin", kind="masuk", details={"work_code": 2}, reading=reading_at(PUNCHES[0][3]))
    cfg = config.from_dict({"device": {"id": "zk-01"}, "paths": {"state_dir": str(state)},
                            "zk": {"listen": "127.0.0.1:0"}})
    stop = threading.Event()
    server = serve_zk(cfg, state, stop)
    try:
        conn = ZK("127.0.0.1", port=server.port, ommit_ping=True, timeout=10).connect()
        try:
            import struct

            from sync.device.zk import codec

            forged = codec.attendance_record(1, NIPS[1], 15, dt.datetime(2026, 3, 2, 7, 0), 0, 1)
            send = conn._ZK__send_command
            send(codec.CMD_PREPARE_DATA, struct.pack("<I", len(forged)))
            send(codec.CMD_DATA, forged)
            send(codec.CMD_OPTIONS_WRQ, b"WorkCode=1\x00")
            send(codec.CMD_REFRESHDATA)
            records = conn.get_attendance()
        finally:
            conn.disconnect()
    finally:
        stop.set()
        server.join(5)
    assert [(r.user_id, r.punch) for r in records] == [(NIPS[0], 0)]
    with punchlog.PunchLog(state, readonly=True) as log:
        assert [(r["employee"], r["details"].get("work_code")) for r in log.records()] == [(NIPS[0], 2)]
        assert not log.verify()


def test_the_pull_api_carries_the_nip_and_the_work_code(tmp_path):
    from test_pullapi import Served

    state = tmp_path / "state"
    punchlog.init(state)
    with punchlog.PunchLog(state) as log:
        for emp, method, kind, local, code in PUNCHES:
            log.append(emp, method, kind=kind, details={} if code is None else {"work_code": code},
                       reading=reading_at(local))
    served = Served(state)
    try:
        import requests

        body = requests.get(served.url + "/api/v1/punches", params={"after_seq": 0, "limit": 10}, timeout=10,
                            headers={"Authorization": "Bearer pull-token-0123456789"}).json()
    finally:
        served.close()
    assert [(r["employee"], r["work_code"]) for r in body["records"]] == [(p[0], p[4]) for p in PUNCHES]
    # the records are the hashed ones: a central server checks them with the shared chain code
    assert not list(chain.check_records(body["records"], body["log_id"]))


def test_a_roster_may_publish_its_own_work_codes_and_a_bad_list_refuses_the_bundle(tmp_path):
    """The central server's list (its schedule's "work_codes") replaces the configured one from the next punch
    on; an unusable list refuses the whole bundle with a reason, and the installed roster stays."""
    from sync.device import roster_client
    from sync.server.storage import open_store
    from sync.wire.rosterbundle import BundleRejected, build_bundle, verify_bundle

    state = tmp_path / "state"
    punchlog.init(state)
    key = open_store(str(tmp_path / "central.db")).server_key()
    regional = {"work_codes": [{"code": 11, "label": "Tugas belajar", "kinds": []},
                               {"code": 12, "label": "Piket malam", "kinds": ["pulang"]}]}
    people = [{"id": NIPS[0], "name": "Sri Wahyuni", "uid": 1, "pin_allowed": True}]
    good = verify_bundle(build_bundle(key, 1, people, regional, []), chain.public_key_b64(key), 0,
                         schedule_check=roster_client.check_published)
    roster.install(state, version=1, employees=good["employees"], schedule=good["schedule"], holidays=[])
    cfg = write_config(tmp_path / "p.toml", state)
    refused = presensi("punch", "--employee", NIPS[0], "--method", "pin", "--work-code", "1", config=cfg)
    assert refused.returncode == 1 and "the codes are: 11 Tugas belajar, 12 Piket malam" in refused.stderr
    ok = presensi("punch", "--employee", NIPS[0], "--method", "pin", "--work-code", "11", "--json", config=cfg)
    assert ok.returncode == 0 and json.loads(ok.stdout)["details"]["work_code"] == 11

    bad = build_bundle(key, 2, people, {"work_codes": [{"code": 300, "label": "Terlalu besar"}]}, [])
    with pytest.raises(BundleRejected) as e:
        verify_bundle(bad, chain.public_key_b64(key), 1, schedule_check=roster_client.check_published)
    assert e.value.code == "bad-schedule" and "work_codes" in str(e.value)
    assert "less than or equal to 255" in str(e.value)
