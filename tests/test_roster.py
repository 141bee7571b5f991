"""Roster store, signed bundles and roster pull: every bad bundle is refused with its reason while the
previous roster keeps working; swaps are atomic; templates are encrypted at rest."""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from conftest import readline
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, HTTPException, Request

from sync.asgi import Served, install_errors
from sync.device import roster_client
from sync.server import rosterfiles
from sync.wire import rosterbundle as rb
from terminal import config, secretbox
from terminal.cli import main as cli_main
from terminal.log import chain, punchlog
from terminal.punch import roster

REPO = Path(__file__).resolve().parents[1]
FINGER_MARK = b"FINGERPRINT-SECRET-" + bytes(range(200)) + bytes(293)


def _jpeg(w=96, h=112) -> bytes:
    img = np.full((h, w, 3), 128, np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(w, h) // 3, (40, 80, 200), -1)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _template(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=128)
    return (v / np.linalg.norm(v)).tolist()


def employees(n=3, tag="v1") -> list[dict]:
    out = []
    for i in range(n):
        out.append({"id": f"19800101200501{i:04d}", "name": f"Pegawai {i} {tag}", "uid": 100 + i,
                    "pin_allowed": i % 2 == 0, "face_templates": [_template(i), _template(i + 1000)],
                    "face_photos": [_jpeg()] if i == 0 else [],
                    "finger_templates": [FINGER_MARK[:512]] if i == 0 else [bytes([i]) * 512]})
    return out


SCHEDULE = {"workdays": ["mon", "tue", "wed", "thu", "fri"],
            "default": {"masuk": "05:30-07:30-10:00", "pulang": "14:00-16:00-23:30"}}
HOLIDAYS = [{"date": "2026-12-25", "name": "Hari Raya Natal"}]


@pytest.fixture()
def server_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def cfg(tmp_path, server_key):
    state = tmp_path / "state"
    c = config.from_dict({"device": {"id": "opd-01"}, "paths": {"state_dir": str(state)},
                          "central": {"server_key": chain.public_key_b64(server_key), "timeout": 2.0,
                                      "token": "dev-token"},
                          "roster": {"max_bundle_bytes": 4 * 1024 * 1024, "max_employees": 10}})
    punchlog.init(state)
    return c


@pytest.fixture()
def installed(cfg, server_key):
    """Version 1 installed from a good bundle."""
    result = roster_client.install_bundle(cfg, rb.build_bundle(server_key, 1, employees(), SCHEDULE, HOLIDAYS),
                                          source="test")
    assert result["status"] == "installed" and result["version"] == 1
    return result


def manifest(version=2, emps=None, **over) -> dict:
    m = {"type": "presensi-roster", "version": version, "device": None, "created_utc": "2026-11-22T00:00:00Z",
         "employees": [rb._employee_to_wire(e) for e in (emps if emps is not None else employees(3, "v2"))],
         "schedule": SCHEDULE, "holidays": HOLIDAYS}
    m.update(over)
    return m


def _repack(bundle: bytes, fn) -> bytes:
    """Decompress, change the payload with fn, recompress (keeps the original header and signature)."""
    return gzip.compress(fn(gzip.decompress(bundle)))


def _unsigned(key) -> bytes:
    def drop_signature(payload: bytes) -> bytes:
        magic, header, body = payload.split(b"\n", 2)
        h = json.loads(header)
        del h["signature"]
        return magic + b"\n" + json.dumps(h).encode() + b"\n" + body
    return _repack(rb.sign_manifest(key, manifest()), drop_signature)


def _tampered(key, fix_checksum: bool) -> bytes:
    def edit(payload: bytes) -> bytes:
        magic, header, body = payload.split(b"\n", 2)
        body = body.replace(b"Pegawai 1 v2", b"Pegawai 9 v2")
        if fix_checksum:
            import hashlib
            h = json.loads(header)
            h["manifest_sha256"] = hashlib.sha256(body).hexdigest()
            header = json.dumps(h).encode()
        return magic + b"\n" + header + b"\n" + body
    return _repack(rb.sign_manifest(key, manifest()), edit)


def _emp_with(**fields) -> list[dict]:
    emps = employees(3, "v2")
    wire = [rb._employee_to_wire(e) for e in emps]
    wire[1].update(fields)
    return wire


def _raw(key, **over) -> bytes:
    m = manifest()
    if "employees_wire" in over:
        m["employees"] = over.pop("employees_wire")
    m.update(over)
    return rb.sign_manifest(key, m)


BAD_BUNDLES = {
    # name: (builder(server_key) -> bytes, expected code, words the reason must contain)
    "garbage": (lambda k: os.urandom(5000), "corrupt", "not gzip"),
    "truncated": (lambda k: rb.sign_manifest(k, manifest())[:-200], "corrupt", "truncated"),
    "flipped-bytes": (lambda k: (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:])(rb.sign_manifest(k, manifest())),
                      "corrupt", "damaged"),
    "not-a-roster": (lambda k: gzip.compress(b"hello world\n"), "corrupt", "magic"),
    "unsigned": (_unsigned, "unsigned", "no signature"),
    "wrong-key": (lambda k: rb.sign_manifest(Ed25519PrivateKey.generate(), manifest()), "bad-signature",
                  "pinned server key"),
    "tampered": (lambda k: _tampered(k, False), "corrupt", "checksum"),
    "tampered-rehashed": (lambda k: _tampered(k, True), "bad-signature", "altered"),
    "equal-version": (lambda k: rb.sign_manifest(k, manifest(version=1)), "old-version", "not newer"),
    "older-version": (lambda k: rb.sign_manifest(k, manifest(version=0)), "malformed", "positive"),
    "too-many-employees": (lambda k: rb.sign_manifest(k, manifest(emps=employees(12))), "oversized", "employees"),
    "gzip-bomb": (lambda k: gzip.compress(rb.MAGIC + b"{}\n" + b" " * (20 * 1024 * 1024)), "oversized", "expands"),
    "oversized-download": (lambda k: rb.sign_manifest(k, manifest(emps=employees(3) + [
        {**employees(1)[0], "id": "big", "uid": 9, "face_photos": [os.urandom(5 * 1024 * 1024)]}])),
        "oversized", "limit"),
    "face-127-values": (lambda k: _raw(k, employees_wire=_emp_with(face_templates=[_template(1)[:127]])),
                        "bad-template", "127 values"),
    "face-129-values": (lambda k: _raw(k, employees_wire=_emp_with(face_templates=[_template(1) + [0.0]])),
                        "bad-template", "129 values"),
    "face-nan": (lambda k: _raw(k, employees_wire=_emp_with(face_templates=[[math.nan] + _template(1)[1:]])),
                 "bad-template", "NaN"),
    "face-infinity": (lambda k: _raw(k, employees_wire=_emp_with(face_templates=[[math.inf] + _template(1)[1:]])),
                      "bad-template", "NaN or infinity"),
    "face-not-numbers": (lambda k: _raw(k, employees_wire=_emp_with(face_templates=[["x"] * 128])),
                         "bad-template", "not a number"),
    "face-zero-vector": (lambda k: _raw(k, employees_wire=_emp_with(face_templates=[[0.0] * 128])),
                         "bad-template", "norm"),
    "finger-511-bytes": (lambda k: _raw(k, employees_wire=_emp_with(
        finger_templates=[base64.b64encode(bytes(511)).decode()])), "bad-template", "511 bytes"),
    "finger-bad-base64": (lambda k: _raw(k, employees_wire=_emp_with(finger_templates=["!!notbase64!!"])),
                          "bad-base64", "not valid base64"),
    "photo-not-image": (lambda k: _raw(k, employees_wire=_emp_with(
        face_photos=[base64.b64encode(b"GIF89a....").decode()])), "bad-photo", "not a JPEG or PNG"),
    "photo-damaged": (lambda k: _raw(k, employees_wire=_emp_with(
        face_photos=[base64.b64encode(b"\xff\xd8\xff\xe0" + os.urandom(3000)).decode()])), "bad-photo",
        "does not decode"),
    "duplicate-id": (lambda k: _raw(k, employees_wire=_emp_with(id="198001012005010000")), "duplicate",
                     "appears more than once"),
    "duplicate-uid": (lambda k: _raw(k, employees_wire=_emp_with(uid=100)), "duplicate", "uid 100"),
    "uid-out-of-range": (lambda k: _raw(k, employees_wire=_emp_with(uid=70000)), "malformed", "uid 70000"),
    "bad-employee-id": (lambda k: _raw(k, employees_wire=_emp_with(id="../etc/passwd")), "malformed", "not valid"),
    "bad-holiday": (lambda k: _raw(k, holidays=[{"date": "2026-02-30", "name": "x"}]), "bad-schedule", "2026-02-30"),
    "bad-schedule-window": (lambda k: _raw(k, schedule={"default": {"masuk": "25:00-99:00"}}), "bad-schedule",
                            "masuk"),
    "schedule-not-object": (lambda k: _raw(k, schedule=["mon"]), "malformed", "schedule must be an object"),
    "other-device": (lambda k: _raw(k, device="opd-99"), "wrong-device", "opd-99"),
}


@pytest.mark.parametrize("name", sorted(BAD_BUNDLES))
def test_bad_bundle_is_refused_with_reason_and_old_roster_stays(cfg, server_key, installed, name):
    build, code, words = BAD_BUNDLES[name]
    data = build(server_key)
    before = roster.Roster.open(cfg.state_dir)
    with pytest.raises(rb.BundleRejected) as exc:
        roster_client.install_bundle(cfg, data, source=f"test:{name}")
    assert exc.value.code == code, exc.value
    assert words in exc.value.reason, exc.value.reason
    # The previous roster is untouched and still usable, by an old and by a new reader.
    with roster.Roster.open(cfg.state_dir) as after:
        assert after.version == 1 and after.is_current() and before.is_current()
        assert [e["name"] for e in after.employees()] == [f"Pegawai {i} v1" for i in range(3)]
        assert after.employee("198001012005010000")["finger_templates"] == [FINGER_MARK[:512]]
    assert before.employees() == roster.Roster.open(cfg.state_dir).employees()
    with punchlog.PunchLog(cfg.state_dir) as plog:
        last = plog.audit_entries(1)[0]
    assert last["action"] == "roster.rejected" and last["details"]["code"] == code


def test_no_pinned_key_refuses_everything(cfg, server_key, installed):
    nokey = config.from_dict({"device": {"id": "opd-01"}, "paths": {"state_dir": str(cfg.state_dir)}})
    with pytest.raises(rb.BundleRejected) as exc:
        roster_client.install_bundle(nokey, rb.build_bundle(server_key, 5, employees(), {}, []), source="t")
    assert exc.value.code == "no-key" and "server_key" in exc.value.reason
    assert roster.current_version(cfg.state_dir) == 1


def test_good_bundle_installs_everything(cfg, server_key, installed):
    sched = {"default": {"masuk": "06:00-07:00-10:00"}}
    data = rb.build_bundle(server_key, 7, employees(4, "v7"), sched, ["2027-01-01"], device="opd-01")
    result = roster_client.install_bundle(cfg, data, source="test")
    assert result["previous_version"] == 1 and result["version"] == 7
    assert result["employees"] == 4 and result["face_templates"] == 8 and result["face_photos"] == 1
    with roster.Roster.open(cfg.state_dir) as r:
        e0 = r.employee("198001012005010000")
        assert r.version == 7 and r.schedule() == sched and r.holidays() == ["2027-01-01"]
        assert e0["uid"] == 100 and e0["pin_allowed"] is True and e0["name"] == "Pegawai 0 v7"
        assert np.allclose(e0["face_templates"][0], _template(0)) and e0["face_photos"] == [_jpeg()]
        assert r.by_uid(101)["id"] == "198001012005010001"
        assert r.employee("nobody") is None


def test_server_refuses_to_build_a_broken_bundle(server_key):
    bad = employees()
    bad[0]["face_templates"] = [[1.0] * 10]
    with pytest.raises(rb.BundleRejected, match="10 values"):
        rb.build_bundle(server_key, 1, bad, {}, [])


def test_templates_are_encrypted_at_rest(cfg, installed):
    state = cfg.state_dir
    key_file = state / secretbox.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    raw = (state / roster.DB_FILE).read_bytes()
    assert FINGER_MARK[:60] not in raw and b"Pegawai 0 v1" in raw
    assert np.float64(_template(0)[0]).tobytes() not in raw
    assert (state / roster.DB_FILE).stat().st_mode & 0o777 == 0o600
    # Another key (e.g. the database copied to another machine) cannot open the templates.
    key_file.write_bytes(os.urandom(32))
    with roster.Roster.open(state) as r, pytest.raises(secretbox.SecretBoxError, match="another key"):
        r.employees()


def test_secretbox_binds_blob_to_its_place(tmp_path):
    box = secretbox.SecretBox(tmp_path)
    blob = box.seal(b"template", b"roster:face:A:0")
    assert box.open(blob, b"roster:face:A:0") == b"template"
    with pytest.raises(secretbox.SecretBoxError):
        box.open(blob, b"roster:face:B:0")
    with pytest.raises(secretbox.SecretBoxError, match="not a sealed blob"):
        box.open(b"plain", b"")
    assert secretbox.SecretBox(tmp_path).key == box.key  # one key per state dir, reused


def test_readers_see_old_or_new_roster_never_a_mix(cfg):
    state = cfg.state_dir
    roster.install(state, version=1, employees=employees(20, "v1"))
    problems, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with roster.Roster.open(state) as r:
                    names = {e["name"].rsplit(" ", 1)[1] for e in r.employees()}
                    if names != {f"v{r.version}"}:
                        problems.append((r.version, names))
            except Exception as e:  # a reader must never fail during a swap
                problems.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for v in range(2, 12):
        roster.install(state, version=v, employees=employees(20, f"v{v}"))
    stop.set()
    for t in threads:
        t.join(10)
    assert problems == [] and roster.current_version(state) == 11
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]


def test_kill_9_during_swaps_leaves_a_whole_roster(cfg):
    state = cfg.state_dir
    roster.install(state, version=1, employees=employees(5, "v1"))
    code = ("import sys; sys.path.insert(0, 'tests')\n"  # test_roster imports conftest's helpers
            "from terminal.punch import roster; from test_roster import employees\n"
            "v = int(sys.argv[2])\nwhile True:\n"
            "    roster.install(sys.argv[1], version=v, employees=employees(40, f'v{v}'))\n"
            "    print(v, flush=True); v += 1\n")
    start = 2
    for delay in (0.0, 0.05, 0.2):
        proc = subprocess.Popen([sys.executable, "-c", code, str(state), str(start)], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert readline(proc.stdout, 60).strip() == str(start)  # at least one swap done
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        with roster.Roster.open(state) as r:
            assert r.version >= start
            assert {e["name"].rsplit(" ", 1)[1] for e in r.employees()} == {f"v{r.version}"}
            assert len(r.people()) == 40
            start = r.version + 1
    # A later writer clears what the killed ones left half-written.
    roster.install(state, version=start + 100, employees=employees(2))
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]


def test_install_never_goes_back_to_an_older_version(cfg):
    roster.install(cfg.state_dir, version=5, employees=employees(2, "v5"))
    with pytest.raises(roster.StaleRoster, match="not newer"):
        roster.install(cfg.state_dir, version=4, employees=employees(2, "v4"))
    assert roster.current_version(cfg.state_dir) == 5


def test_apply_user_update_keeps_others_and_stable_uid(cfg, installed):
    state = cfg.state_dir
    added = roster.apply_user_update(state, {"id": "4711", "name": "Siti", "pin_allowed": True})
    assert added["uid"] == 4711
    roster.apply_user_update(state, {"id": "198001012005010001", "name": "Renamed"})
    with roster.Roster.open(state) as r:
        assert r.version == 1 and r.info()["local_changes"] == 2
        assert r.employee("198001012005010001")["name"] == "Renamed"
        assert r.employee("198001012005010001")["face_templates"][0] == pytest.approx(_template(1))
    roster.apply_user_update(state, {"id": "4711", "delete": True})
    assert roster.Roster.open(state).employee("4711") is None
    with pytest.raises(roster.RosterError, match="already belongs"):
        roster.apply_user_update(state, {"id": "x1", "uid": 100})


def test_stable_uid_is_deterministic_and_avoids_collisions():
    assert roster.stable_uid("123", set()) == 123
    a = roster.stable_uid("198001012005011001", set())
    assert a == roster.stable_uid("198001012005011001", set()) and 1 <= a <= 65535
    assert roster.stable_uid("198001012005011001", {a}) == a % 65535 + 1


def test_publish_from_files_csv_and_photos(tmp_path, server_key):
    (tmp_path / "photos" / "199001012015011002").mkdir(parents=True)
    (tmp_path / "photos" / "199001012015011002" / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "photos" / "42.png").write_bytes(cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    fp = base64.b64encode(bytes(512)).decode()
    (tmp_path / "pegawai.csv").write_text("id,name,pin_allowed,finger_templates\n"
                                          f"199001012015011002,Budi Santoso,ya,{fp}\n42,Ani,0,\n")
    emps = rosterfiles.publish_from_files(tmp_path / "pegawai.csv", tmp_path / "photos",
                                 previous=[{"id": "199001012015011002", "uid": 777}])
    by_id = {e["id"]: e for e in emps}
    assert by_id["199001012015011002"]["uid"] == 777 and by_id["42"]["uid"] == 42
    assert by_id["199001012015011002"]["pin_allowed"] is True and by_id["42"]["pin_allowed"] is False
    assert len(by_id["199001012015011002"]["face_photos"]) == 1 and len(by_id["42"]["face_photos"]) == 1
    bundle = rb.verify_bundle(rb.build_bundle(server_key, 1, emps, {}, []), server_key.public_key(), 0)
    assert bundle["counts"]["finger_templates"] == 1
    (tmp_path / "bad.csv").write_text("id,name\nnot valid!,x\n")
    with pytest.raises(ValueError, match="line 2"):
        rosterfiles.publish_from_files(tmp_path / "bad.csv", None)


# -- pulling over real HTTP -------------------------------------------------------------------------------


def roster_response(req, latest_version: int | None, load_bundle):
    """The answer to `GET /api/v1/devices/{id}/roster?since=VERSION` of this test's central server (a
    Starlette Response; `req` is the Starlette Request): 204 when nothing newer than `since` (or If-None-Match hits:
    304), else the bundle. A malformed `since` raises HTTPException 400."""
    from starlette.exceptions import HTTPException
    from starlette.responses import Response

    raw = req.query_params.get("since", "0")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise HTTPException(400, "query parameter 'since' must be a whole number")
    since = int(raw)
    if latest_version is None or latest_version <= since:
        return Response(b"", 204, {"X-Roster-Version": str(latest_version or 0)})
    etag = f'"roster-v{latest_version}"'
    if req.headers.get("If-None-Match") == etag:
        return Response(b"", 304, {"ETag": etag})
    return Response(load_bundle(), 200, {"Content-Type": rb.CONTENT_TYPE, "ETag": etag,
                                         "X-Roster-Version": str(latest_version)})


class FakeCentral:
    """A minimal central server for the roster endpoint only (the reference server has its own tests):
    serves whatever bundle the test sets, through roster_response below."""

    def __init__(self, token="dev-token"):
        self.bundle, self.version, self.token, self.stall = None, None, token, 0.0
        self.requests = []
        app = FastAPI()
        app.add_api_route("/api/v1/devices/{device_id}/roster", self.roster, methods=["GET"])
        install_errors(app)  # the reference server's error bodies
        self.server = Served(app, "127.0.0.1", 0)
        self.url = self.server.url

    def roster(self, request: Request):
        self.requests.append(dict(request.query_params))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise HTTPException(401, "bad token")
        time.sleep(self.stall)
        return roster_response(request, self.version, lambda: self.bundle)

    def close(self):
        self.server.stop()


@pytest.fixture()
def central():
    c = FakeCentral()
    yield c
    c.close()


def _with_url(cfg, url):
    raw = {"device": {"id": "opd-01"}, "paths": {"state_dir": str(cfg.state_dir)},
           "central": {"url": url, "token": cfg.central.token, "server_key": cfg.central.server_key,
                       "timeout": 1.0},
           "roster": {"max_bundle_bytes": cfg.roster.max_bundle_bytes, "max_employees": 10}}
    return config.from_dict(raw)


def test_pull_installs_then_reports_current(cfg, server_key, central):
    c = _with_url(cfg, central.url)
    assert roster_client.pull_roster(c) == {"status": "current", "version": 0}
    central.version, central.bundle = 3, rb.build_bundle(server_key, 3, employees(), SCHEDULE, HOLIDAYS)
    result = roster_client.pull_roster(c)
    assert result["status"] == "installed" and result["version"] == 3 and result["audit"] == "recorded"
    assert roster_client.pull_roster(c)["status"] == "current"
    assert [q.get("since") for q in central.requests] == ["0", "0", "3"]


def test_pull_refuses_bad_bundle_from_server(cfg, server_key, central, installed):
    c = _with_url(cfg, central.url)
    central.version, central.bundle = 9, rb.sign_manifest(Ed25519PrivateKey.generate(), manifest(9))
    with pytest.raises(rb.BundleRejected) as exc:
        roster_client.pull_roster(c)
    assert exc.value.code == "bad-signature" and roster.current_version(cfg.state_dir) == 1


def test_pull_errors_say_what_to_do(cfg, server_key, central):
    c = _with_url(cfg, central.url)
    central.token = "another"
    with pytest.raises(roster_client.RosterPullError, match="refused the device token"):
        roster_client.pull_roster(c)
    central.token, central.stall = "dev-token", 2.5
    with pytest.raises(roster_client.RosterPullError, match="did not answer within"):
        roster_client.pull_roster(c)
    dead = _with_url(cfg, "http://127.0.0.1:9")
    with pytest.raises(roster_client.RosterPullError, match="cannot reach"):
        roster_client.pull_roster(dead)


def test_daemon_loop_pulls_and_keeps_going(cfg, server_key, central):
    c = _with_url(cfg, central.url)
    central.version, central.bundle = 2, rb.build_bundle(server_key, 2, employees(), {}, [])
    stop = threading.Event()
    t = threading.Thread(target=roster_client.run_periodically, args=(c, stop), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while roster.current_version(cfg.state_dir) != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert roster.current_version(cfg.state_dir) == 2
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_roster_response_rejects_malformed_since(central):
    r = requests.get(f"{central.url}/api/v1/devices/x/roster?since=abc",
                     headers={"Authorization": "Bearer dev-token"}, timeout=5)
    assert r.status_code == 400 and "since" in r.json()["error"]


# -- command line -----------------------------------------------------------------------------------------

def _write_config(cfg, path: Path) -> Path:
    path.write_text(f'[device]\nid = "opd-01"\n[paths]\nstate_dir = "{cfg.state_dir}"\n'
                    f'[central]\nserver_key = "{cfg.central.server_key}"\n')
    return path


def test_cli_import_and_show(cfg, server_key, tmp_path, capsys):
    conf = _write_config(cfg, tmp_path / "p.toml")
    assert cli_main(["roster", "show", "-c", str(conf)]) == 0
    assert "no roster installed" in capsys.readouterr().out
    good = tmp_path / "r2.roster.gz"
    good.write_bytes(rb.build_bundle(server_key, 2, employees(), SCHEDULE, HOLIDAYS))
    assert cli_main(["roster", "import", str(good), "-c", str(conf), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 2 and out["employees"] == 3
    bad = tmp_path / "bad.roster.gz"
    bad.write_bytes(rb.sign_manifest(Ed25519PrivateKey.generate(), manifest(3)))
    assert cli_main(["roster", "import", str(bad), "-c", str(conf)]) == 1
    err = capsys.readouterr().err
    assert "REFUSED (bad-signature)" in err and "version 2) stays in use" in err
    assert cli_main(["roster", "show", "--employees", "--json", "-c", str(conf)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2 and len(shown["people"]) == 3 and "face_templates" not in shown["people"][0]
    assert cli_main(["roster", "import", str(tmp_path / "missing.gz"), "-c", str(conf)]) == 1
    assert "cannot read the bundle" in capsys.readouterr().err


def test_cli_pull_without_server_configured(cfg, tmp_path):
    conf = _write_config(cfg, tmp_path / "p.toml")
    proc = subprocess.run([sys.executable, "-m", "terminal.cli", "roster", "pull", "-c", str(conf)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "[central] url and token are not set" in proc.stderr


def test_pull_from_the_reference_server(cfg, tmp_path):
    """End to end with the reference central server (sync/server): publish from a CSV, pull, swap."""
    import sync.server.app as server_app
    from sync.server.storage import open_store

    db = tmp_path / "central.db"
    store = open_store(db)
    reg = server_app.add_device(store, "opd-01")
    srv = Served(server_app.make_app(db), "127.0.0.1", 0)
    try:
        c = config.from_dict({"device": {"id": "opd-01"}, "paths": {"state_dir": str(cfg.state_dir)},
                              "central": {"url": srv.url, "token": reg["token"],
                                          "enrolment_code": reg["enrolment_code"],
                                          "server_key": reg["server_key"], "timeout": 5.0}})
        assert roster_client.pull_roster(c)["status"] == "current"
        emps = rosterfiles.publish_from_files(_csv(tmp_path), None)
        store.publish_roster(4, rb.build_bundle(store.server_key(), 4, emps, SCHEDULE, HOLIDAYS))
        assert roster_client.pull_roster(c)["version"] == 4
        assert roster_client.pull_roster(c)["status"] == "current"
        with roster.Roster.open(cfg.state_dir) as r:
            assert [p["name"] for p in r.people()] == ["Ani", "Budi"]
    finally:
        srv.stop()


def _csv(tmp_path) -> Path:
    path = tmp_path / "pegawai.csv"
    path.write_text("id,name,pin_allowed\n1001,Ani,1\n1002,Budi,0\n")
    return path


def test_server_publish_roster_command(tmp_path, capsys, server_key):
    db, out = tmp_path / "central.db", tmp_path / "r.roster.gz"
    (tmp_path / "holidays.json").write_text('[{"date": "2026-08-17", "name": "HUT RI"}]')
    argv = ["server", "publish-roster", str(_csv(tmp_path)), "--db", str(db), "--json"]
    assert cli_main(argv + ["--holidays", str(tmp_path / "holidays.json"), "-o", str(out)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["version"] == 1 and first["employees"] == 2
    assert cli_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert cli_main(argv + ["--version", "2"]) == 1
    assert "not newer than the published version 2" in capsys.readouterr().err
    from sync.server.storage import open_store

    store = open_store(db)
    latest = rb.verify_bundle(store.latest_roster()["bundle"], store.server_key().public_key(), 1)
    v1 = rb.verify_bundle(out.read_bytes(), store.server_key().public_key(), 0)
    assert [e["uid"] for e in latest["employees"]] == [e["uid"] for e in v1["employees"]] == [1001, 1002]
    assert v1["holidays"] == [{"date": "2026-08-17", "name": "HUT RI"}]


def test_the_bundle_format_and_the_roster_store_agree_on_ids_and_user_numbers():
    """Both sides of the wire define who may be in a roster (the server imports no terminal code): the id
    pattern, template sizes and ZKTeco user numbers must stay the same on both."""
    assert rb.EMPLOYEE_ID.pattern == roster.EMPLOYEE_ID.pattern
    assert (rb.FACE_DIM, rb.FINGER_BYTES, rb.MAX_UID) == (roster.FACE_DIM, roster.FINGER_BYTES, roster.MAX_UID)
    taken: set[int] = set()
    for emp in ("123", "198001012005011001", "P-ENROL-1", "123", "65535", "65536", "x.y_z-1"):
        assert rb.stable_uid(emp, taken) == roster.stable_uid(emp, taken), emp
        taken.add(rb.stable_uid(emp, taken))
