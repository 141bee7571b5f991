"""Enrol once, punch anywhere (issue 17): a face and a finger enrolled at terminal A reach terminal B through
the reference central server, and removing the employee from the roster removes them from both, the
fingerprint sensors' slots included. Two real terminals (own state dirs, own emulated sensors on real ptys
driven by the unmodified pyfingerprint), one real server on 127.0.0.1, real LFW photos, the `presensi` CLI.
Plus what an attacker on the office LAN would try against the enrolment upload."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from face_support import lfw, needs_shared
from synctools import make_terminal, presensi, serve_in_thread, signed_post
from test_fingerprint_driver import _play_enrolment

from drivers.fingerprint.emulator import FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
from sync.server import enrolments
from sync.server.app import add_device, make_app
from sync.wire import sealedtemplate
from terminal import identity
from terminal.log import chain

NIP = "199203152019032007"  # the roaming employee (an 18-digit NIP)
OTHER = "198001012005011002"
PERSON = "Aaron_Peirsol"  # four LFW photos that all pass the enrolment quality gate


def _roster_csv(path, *people):
    path.write_text("id,name\n" + "".join(f"{nip},{name}\n" for nip, name in people))
    return path


def _json(proc):
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _terminal(tmp, url, store, device, emu):
    cfg_path, _ = make_terminal(tmp, url, add_device(store, device), device=device,
                                server_key=store.server_public_key())
    cfg_path.write_text(cfg_path.read_text() + f'[fingerprint]\nenabled = true\nport = "{emu.path}"\n')
    return cfg_path


@pytest.fixture
def server(tmp_path):
    db = tmp_path / "central.db"
    app = make_app(str(db))
    SERVER["store"] = app.store
    with serve_in_thread(app) as url:
        yield app.store, url, db


@needs_shared
def test_enrolled_at_a_recognised_at_b_and_removed_from_both(tmp_path, server):
    store, url, db = server
    employees = _roster_csv(tmp_path / "pegawai.csv", (NIP, "Rina Lestari"), (OTHER, "Agus Salim"))
    presensi("server", "publish-roster", employees, "--db", db)
    with FingerprintEmulator(Settings(capacity=162), link=tmp_path / "fp-a", paced=True) as emu_a, \
            FingerprintEmulator(Settings(capacity=162), link=tmp_path / "fp-b", paced=True) as emu_b:
        a = _terminal(tmp_path / "a", url, store, "opd-a-01", emu_a)
        b = _terminal(tmp_path / "b", url, store, "opd-b-01", emu_b)
        for cfg in (a, b):
            presensi("roster", "pull", "-c", cfg)

        # terminal A: a face from three photos, a finger on its sensor
        photos = tmp_path / "enrol" / NIP
        photos.mkdir(parents=True)
        for n in (1, 2, 3):
            shutil.copy(lfw(PERSON, n), photos)
        presensi("enroll-photos", tmp_path / "enrol", "-c", a)
        finger = synthetic_template("rina's right index")
        person = threading.Thread(target=_play_enrolment, args=(emu_a, finger), daemon=True)
        person.start()
        presensi("finger", "enroll", "--employee", NIP, "-c", a, timeout=90)
        person.join(30)

        waiting = json.loads(presensi("sync", "status", "--json", "-c", a).stdout)["enrolments"]
        assert waiting["unsent"] == 4  # three face templates, one finger, queued for the central server
        sync = presensi("sync", "now", "--json", "-c", a)
        sent = json.loads(sync.stdout)["enrolments"]
        assert sent["accepted"] == 4 and sent["refused"] == 0, sent
        assert json.loads(presensi("sync", "status", "--json", "-c", a).stdout)["enrolments"]["unsent"] == 0
        # A's own copies are redundant once the roster carries them; A still recognises her from the roster
        settled = json.loads(presensi("roster", "pull", "--json", "-c", a).stdout)["local_templates_settled"]
        assert settled == {"face": 3, "finger": 1}

        # terminal B: its own state, the same server
        pulled = json.loads(presensi("roster", "pull", "--json", "-c", b).stdout)
        assert pulled["status"] == "installed" and pulled["face_templates"] == 3 and pulled["finger_templates"] == 1
        presensi("finger", "sync", "-c", b)
        seen = _json(presensi("identify", lfw(PERSON, 4), "--json", "-c", b))
        assert [f["employee"] for f in seen[0]["faces"]] == [NIP]  # a photo A never saw
        emu_b.place_finger(finger, score=90)
        assert json.loads(presensi("finger", "scan", "--json", "-c", b).stdout)["employee"] == NIP
        assert sorted(emu_b.sim.library.values()) == [finger]

        # the employee leaves the roster at the central server: gone from both terminals
        _roster_csv(employees, (OTHER, "Agus Salim"))
        presensi("server", "publish-roster", employees, "--db", db)
        for cfg, emu in ((a, emu_a), (b, emu_b)):
            presensi("roster", "pull", "-c", cfg)
            presensi("finger", "sync", "-c", cfg)
            assert emu.sim.library == {}, "the leaver's template is still in a sensor slot"
            emu.place_finger(finger, score=90)
            assert json.loads(presensi("finger", "scan", "--json", "-c", cfg).stdout)["employee"] is None
            ident = presensi("identify", lfw(PERSON, 4), "--json", "-c", cfg, check=False)
            assert NIP not in ident.stdout
            assert ident.returncode == 0 or "nobody is enrolled" in ident.stderr


def _upload(url, token, key, device, items, nonce_headers=None):
    body = json.dumps({"enrolments": items}).encode()
    return signed_post(url, f"/api/v1/devices/{device}/enrolments", body, token, key, device=device,
                       headers=nonce_headers)


SERVER = {}  # the store of the running test's server: the enrolment key templates are sealed to


def _face_vector(ref: int) -> bytes:
    vec = np.random.default_rng(ref).normal(size=128).astype("<f4")
    return (vec / np.linalg.norm(vec)).astype("<f4").tobytes()


def _sealed(raw: bytes, employee=NIP, modality="face", device="opd-a-01") -> str:
    key = enrolments.public_key_b64(SERVER["store"])
    return sealedtemplate.seal(key, raw, sealedtemplate.aad(device, employee, modality))


def _face_item(ref=1, employee=NIP, device="opd-a-01"):
    return {"ref": ref, "employee": employee, "modality": "face", "created_ns": 1,
            "sealed": _sealed(_face_vector(ref), employee, device=device)}


def test_forged_replayed_and_foreign_enrolment_uploads_are_refused_and_store_nothing(tmp_path, server):
    import requests

    from sync.wire import signed

    store, url, db = server
    presensi("server", "publish-roster", _roster_csv(tmp_path / "p.csv", (NIP, "Rina Lestari")), "--db", db)
    version = store.latest_roster()["version"]
    keys = {}
    regs = {}
    for dev in ("opd-a-01", "opd-b-01"):
        cfg, _ = make_terminal(tmp_path / dev, url, "x", device=dev)
        keys[dev] = identity.load_key(cfg.parent / f"state-{dev}")
        regs[dev] = add_device(store, dev, chain.public_key_b64(keys[dev]))
    token = regs["opd-a-01"]["token"]
    item = [_face_item()]

    unsigned = _upload(url, token, None, "opd-a-01", item)
    assert unsigned.status_code == 401
    other_key = _upload(url, token, keys["opd-b-01"], "opd-a-01", item)  # B's key under A's name
    assert other_key.status_code == 403
    other_token = _upload(url, regs["opd-b-01"]["token"], keys["opd-a-01"], "opd-a-01", item)
    assert other_token.status_code == 403
    body = json.dumps({"enrolments": item}).encode()
    path = "/api/v1/devices/opd-a-01/enrolments"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               **signed.sign_request(keys["opd-a-01"], "POST", path, "opd-a-01", body)}
    tampered = requests.post(url + path, data=body.replace(NIP.encode(), OTHER.encode()), headers=headers,
                             timeout=10)
    assert tampered.status_code == 401  # the signature covers the body
    assert enrolments.listing(store) == [] and store.latest_roster()["version"] == version

    first = requests.post(url + path, data=body, headers=headers, timeout=10)
    assert first.status_code == 200 and first.json()["results"][0]["status"] == "accepted"
    replay = requests.post(url + path, data=body, headers=headers, timeout=10)
    assert replay.status_code == 409  # the same signed request again
    assert len(enrolments.listing(store)) == 1 and store.latest_roster()["version"] == version + 1

    # an employee the roster does not list: refused, nothing stored, no new roster
    stranger = _upload(url, token, keys["opd-a-01"], "opd-a-01", [_face_item(2, employee="200001012025011099")])
    assert stranger.status_code == 200
    assert stranger.json()["results"][0]["status"] == "refused"
    assert "not in the published roster" in stranger.json()["results"][0]["reason"]
    # not a template: NaN, the wrong size; an oversized body
    nan = {**_face_item(3), "sealed": _sealed(np.full(128, np.nan, "<f4").tobytes())}
    short = {**_face_item(4), "modality": "finger", "sealed": _sealed(b"x" * 100, modality="finger")}
    # sealed for another device, for another employee, or to another key: it does not open
    b_s = {**_face_item(5), "sealed": _sealed(_face_vector(5), device="opd-b-01")}
    moved = {**_face_item(6), "sealed": _sealed(_face_vector(6), employee=OTHER)}
    stranger_key = sealedtemplate.public_b64(X25519PrivateKey.generate())
    other_key = {**_face_item(7), "sealed": sealedtemplate.seal(stranger_key, _face_vector(7),
                                                               sealedtemplate.aad("opd-a-01", NIP, "face"))}
    bad = _upload(url, token, keys["opd-a-01"], "opd-a-01", [nan, short, b_s, moved, other_key])
    assert [r["status"] for r in bad.json()["results"]] == ["refused"] * 5
    huge = _upload(url, token, keys["opd-a-01"], "opd-a-01", [_face_item(i) for i in range(1, 2000)])
    assert huge.status_code in (400, 413)
    assert len(enrolments.listing(store)) == 1 and store.latest_roster()["version"] == version + 1


def _sha(item) -> str:
    return hashlib.sha256(_face_vector(item["ref"])).hexdigest()


def _two_devices(tmp_path, url, store):
    out = {}
    for dev in ("opd-a-01", "opd-b-01"):
        cfg, _ = make_terminal(tmp_path / dev, url, "x", device=dev)
        key = identity.load_key(cfg.parent / f"state-{dev}")
        out[dev] = (add_device(store, dev, chain.public_key_b64(key))["token"], key)
    return out


def _published(store) -> dict:
    from sync.server import republish

    return {e["id"]: e for e in republish.latest(store)["employees"]}


def test_with_approval_on_enrolments_wait_and_only_approved_ones_are_published(tmp_path, server):
    store, url, db = server
    presensi("server", "publish-roster", _roster_csv(tmp_path / "p.csv", (NIP, "Rina Lestari")), "--db", db)
    devices = _two_devices(tmp_path, url, store)
    assert json.loads(presensi("server", "enrolments", "settings", "--approval", "on", "--json", "--db", db)
                      .stdout) == {"approval": "on", "scope": "regency"}
    version = store.latest_roster()["version"]
    token, key = devices["opd-a-01"]
    answer = _upload(url, token, key, "opd-a-01", [_face_item(1), _face_item(2)]).json()
    assert [r["status"] for r in answer["results"]] == ["pending", "pending"] and answer["roster_version"] is None
    assert store.latest_roster()["version"] == version  # nothing reaches the terminals yet
    listed = json.loads(presensi("server", "enrolments", "list", "--status", "pending", "--json", "--db", db).stdout)
    ids = [e["id"] for e in listed["enrolments"]]
    assert len(ids) == 2 and all("template" not in e for e in listed["enrolments"])  # no biometric data
    presensi("server", "enrolments", "approve", str(ids[0]), "--db", db)
    presensi("server", "enrolments", "reject", str(ids[1]), "--db", db)
    assert store.latest_roster()["version"] == version + 2
    faces = _published(store)[NIP]["face_templates"]
    assert [enrolments.template_sha256("face", t) for t in faces] == [listed["enrolments"][0]["template_sha256"]]
    unknown = presensi("server", "enrolments", "approve", "999", "--db", db, check=False)
    assert unknown.returncode == 1 and "no enrolment with id 999" in unknown.stderr


def test_two_terminals_enrolling_one_person_keep_both_newest_first(tmp_path, server):
    store, url, db = server
    presensi("server", "publish-roster", _roster_csv(tmp_path / "p.csv", (NIP, "Rina Lestari")), "--db", db)
    devices = _two_devices(tmp_path, url, store)
    a, b = devices["opd-a-01"], devices["opd-b-01"]
    first = _face_item(1)
    assert _upload(url, *a, "opd-a-01", [first]).json()["results"][0]["status"] == "accepted"
    assert _upload(url, *b, "opd-b-01", [_face_item(2, device="opd-b-01")]).json()["results"][0]["status"] \
        == "accepted"
    again = _upload(url, *b, "opd-b-01", [{**_face_item(1, device="opd-b-01"), "ref": 9}]).json()  # same, from B
    assert again["results"][0] == {**again["results"][0], "status": "duplicate", "decision": "accepted"}
    faces = _published(store)[NIP]["face_templates"]
    newest_first = [_sha(_face_item(2)), _sha(first)]
    assert [enrolments.template_sha256("face", t) for t in faces] == newest_first
    # eleven more from A: the oldest fall off beyond ten per modality
    _upload(url, *a, "opd-a-01", [_face_item(i) for i in range(10, 21)])
    faces = _published(store)[NIP]["face_templates"]
    assert len(faces) == enrolments.PER_MODALITY
    assert enrolments.template_sha256("face", faces[0]) == _sha(_face_item(20))


def _roster_as(url, store, device, token, key) -> dict:
    """The roster a terminal would download, verified as the terminal verifies it: employee -> face templates."""
    from sync.wire import rosterbundle

    reply = signed_post(url, f"/api/v1/devices/{device}/roster", b"", token, key, device=device, method="GET")
    assert reply.status_code == 200, reply.text
    bundle = rosterbundle.verify_bundle(reply.content, store.server_public_key(), 0, device_id=device)
    return {e["id"]: [enrolments.template_sha256("face", t) for t in e["face_templates"]] for e in bundle["employees"]}


def test_with_the_office_scope_an_enrolment_reaches_only_the_terminals_of_the_employees_office(tmp_path, server):
    store, url, db = server
    staff = tmp_path / "p.csv"
    staff.write_text(f"id,name,office\n{NIP},Rina Lestari,Dinkes\n{OTHER},Agus Salim,\n")
    presensi("server", "publish-roster", staff, "--db", db)
    devices = _two_devices(tmp_path, url, store)
    presensi("server", "enrolments", "office", "opd-a-01", "Dinkes", "--db", db)
    presensi("server", "enrolments", "office", "opd-b-01", "Bappeda", "--db", db)
    assert json.loads(presensi("server", "enrolments", "settings", "--scope", "office", "--json", "--db", db)
                      .stdout)["scope"] == "office"
    # Rina (Dinkes) and Agus (no office) enrolled at the Bappeda terminal
    token_b, key_b = devices["opd-b-01"]
    items = [_face_item(1, device="opd-b-01"), {**_face_item(2, employee=OTHER, device="opd-b-01")}]
    assert [r["status"] for r in _upload(url, token_b, key_b, "opd-b-01", items).json()["results"]] == \
        ["accepted", "accepted"]
    at_a = _roster_as(url, store, "opd-a-01", *devices["opd-a-01"])
    at_b = _roster_as(url, store, "opd-b-01", *devices["opd-b-01"])
    assert at_a == {NIP: [_sha(_face_item(1))], OTHER: [_sha(_face_item(2))]}  # her office's terminal has her
    assert at_b == {NIP: [], OTHER: [_sha(_face_item(2))]}  # another office's: only who belongs to no office
    presensi("server", "enrolments", "settings", "--scope", "regency", "--db", db)
    assert _roster_as(url, store, "opd-b-01", *devices["opd-b-01"])[NIP] == [_sha(_face_item(1))]
    bad = presensi("server", "enrolments", "office", "opd-x-99", "Dinkes", "--db", db, check=False)
    assert bad.returncode == 1 and "not registered" in bad.stderr
