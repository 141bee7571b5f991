"""The work-code choice on the kiosk (800x480, headless Chromium): a touch before the punch, and the offer after
a recognised face or finger that the punch waits for; both end in the hashed record. Then what an attacker on
the office LAN, or a script on the terminal, would try against POST /kiosk/work-code: refused, nothing armed,
nothing recorded. A real daemon runs in a thread, with the reference central server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from conftest import call_asgi
from test_web import ARTIFACTS, OVERFLOW_JS

from sync.asgi import Served
from sync.server.app import add_device
from sync.server.app import make_app as central_app
from terminal import config, identity
from terminal.app import web as web_server
from terminal.app.daemon import Daemon
from terminal.log import chain, punchlog
from terminal.punch import roster
from terminal.web import ensure_admin_password

DEVICE = "kiosk-kode-01"
BUDI = "199001012020011001"
KARTINI = "198505052010012002"
KARTINI_NAME = "Raden Ajeng Kartini Sosroningrat Wijayakusuma Hadiningrat"
SITI = "197001011995031003"
ANDI = "199203032019031004"
OFFER_SECONDS = 15.0


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kiosk")
    central = central_app(str(tmp / "central.db"))
    served = Served(central, "127.0.0.1", 0)
    state = tmp / "state"
    punchlog.init(state)
    password = ensure_admin_password(state)
    reg = add_device(central.store, DEVICE, chain.public_key_b64(identity.load_key(state)))
    roster.install(state, version=1, employees=[
        {"id": BUDI, "name": "Budi Santoso", "uid": 1, "pin_allowed": True},
        {"id": KARTINI, "name": KARTINI_NAME, "uid": 2, "pin_allowed": True},
        {"id": SITI, "name": "Siti Aminah", "uid": 3, "pin_allowed": True},
        {"id": ANDI, "name": "Andi Pratama", "uid": 4, "pin_allowed": True}])
    cfg = config.from_dict({
        "device": {"id": DEVICE, "name": "Dinas Kependudukan dan Pencatatan Sipil"},
        "paths": {"state_dir": str(state)},
        "central": {"url": served.url, "token": reg["token"], "server_key": reg["server_key"],
                    "push_interval": 2.0, "timeout": 2.0, "max_backoff": 2.0},
        "web": {"listen": "127.0.0.1:0"}, "camera": {"enabled": False}, "fingerprint": {"enabled": False},
        "work_codes": {"after_punch_seconds": OFFER_SECONDS, "before_punch_seconds": 120.0}})
    daemon = Daemon(cfg)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not daemon.web_port and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.web_port, "the daemon's web server did not start"
    daemon.admin_password = password
    yield daemon, f"http://127.0.0.1:{daemon.web_port}", state
    daemon.stop_event.set()
    thread.join(20)
    served.stop()


def count(state) -> int:
    with punchlog.PunchLog(state, readonly=True) as log:
        return log.count()


def in_thread(fn, *args, **kw):
    """Run a punch as the face or finger worker does (it blocks while the kiosk offers the codes)."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(outcome=fn(*args, **kw)), daemon=True)
    t.start()
    return t, box


def open_kiosk(browser, base) -> None:
    browser.navigate(base + "/")
    browser.wait_for("window.__kiosk.connected && window.__kiosk.codesReady === true", 20)


def test_a_code_touched_before_the_punch_goes_into_the_punch(kiosk, browser):
    daemon, base, state = kiosk
    open_kiosk(browser, base)
    assert browser.js("document.documentElement.lang") == "id"
    labels = browser.js("[...document.querySelectorAll('#code-buttons button')].map(b => b.textContent)")
    assert labels == ["1 Dinas Luar", "2 Izin keluar", "3 Kembali dari izin", "4 Lembur"]
    browser.js("document.querySelector('#code-buttons button[data-code=\"3\"]').click()")
    browser.wait_for("window.__kiosk.armed === 3", 10)
    assert "Dipilih: 3 Kembali dari izin" in browser.js("document.getElementById('armed').textContent")
    assert browser.js(OVERFLOW_JS) == [], "the work-code buttons do not fit the 800x480 screen"
    browser.screenshot(ARTIFACTS / "kiosk-work-code-before.png")
    assert daemon.punches.chooser.peek()["code"] == 3

    outcome = daemon.punches.punch(BUDI, "finger", details={"score": 140, "slot": 1})
    assert outcome.recorded and outcome.record["details"]["work_code"] == 3
    assert outcome.message.endswith("· 3 Kembali dari izin")
    browser.wait_for("window.__kiosk.armed === null", 10)  # used up by that punch
    assert daemon.punches.chooser.peek() is None


def test_the_offer_after_recognition_is_recorded_as_part_of_the_punch(kiosk, browser):
    daemon, base, state = kiosk
    open_kiosk(browser, base)
    before = count(state)
    t, box = in_thread(daemon.punches.punch, KARTINI, "face", details={"test": "offer"})
    browser.wait_for("window.__kiosk.choice !== null && !document.getElementById('choice').hidden", 20)
    offer = browser.js("window.__kiosk.choice")
    assert offer["employee"] == KARTINI and {c["code"] for c in offer["codes"]} >= {2, 3}
    assert count(state) == before  # held: nothing is committed (nor acknowledged) before the choice
    title = browser.js("document.getElementById('choice-title').textContent")
    assert title.startswith(KARTINI_NAME) and title.endswith("pilih kode kerja")
    assert browser.js("document.getElementById('choice-skip').textContent") == "Lewati"
    assert browser.js(OVERFLOW_JS) == [], "the work-code offer does not fit the 800x480 screen"
    browser.screenshot(ARTIFACTS / "kiosk-work-code-after.png")
    browser.js("document.querySelector('#choice-buttons button[data-code=\"2\"]').click()")
    t.join(20)
    outcome = box["outcome"]
    assert outcome.recorded and outcome.record["details"]["work_code"] == 2
    assert outcome.record["details"]["test"] == "offer" and count(state) == before + 1
    browser.wait_for("document.getElementById('choice').hidden", 10)
    with punchlog.PunchLog(state, readonly=True) as log:
        assert log.get(outcome.record["seq"])["details"]["work_code"] == 2 and not log.verify()


def test_lewati_records_the_punch_without_a_code(kiosk, browser):
    daemon, base, state = kiosk
    open_kiosk(browser, base)
    t, box = in_thread(daemon.punches.punch, SITI, "finger", details={"score": 120, "slot": 3})
    browser.wait_for("window.__kiosk.choice !== null", 20)
    browser.js("document.getElementById('choice-skip').click()")
    t.join(20)
    assert box["outcome"].recorded and "work_code" not in box["outcome"].record["details"]


def test_the_18_digit_nip_is_shown_whole_on_the_kiosk(kiosk, browser):
    """An employee id is the 18-digit NIP everywhere; on the screen too (here: a NIP not on the roster)."""
    daemon, base, state = kiosk
    open_kiosk(browser, base)
    stranger = "199912312024121001"
    n = browser.js("window.__kiosk.shown.length")
    outcome = daemon.punches.punch(stranger, "finger", details={"slot": 9, "score": 99})
    assert outcome.refused and not outcome.recorded
    find = f"window.__kiosk.shown.slice({n}).find(e => e.cls === 'bad')"
    browser.wait_for(f"!!({find})", 15)
    assert browser.js(find)["text"] == f"Ditolak: NIP {stranger} tidak ada di daftar pegawai terminal ini"
    assert browser.js(OVERFLOW_JS) == []
    browser.screenshot(ARTIFACTS / "kiosk-nip-refused.png")


def test_the_admin_page_exports_the_zk_attlog_file_to_the_stick(kiosk, tmp_path):
    import re

    daemon, base, state = kiosk
    s = requests.Session()
    page = s.get(base + "/admin/login", timeout=10)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = s.post(base + "/admin/login", data={"csrf": token, "password": daemon.admin_password}, timeout=10)
    csrf = re.search(r'data-csrf="([^"]+)"', r.text).group(1)
    form = s.get(base + "/admin/export", timeout=10).text
    assert "juga berkas ZKTeco" in form
    usb = tmp_path / "usb"
    usb.mkdir()
    done = s.post(base + "/admin/export", data={"csrf": csrf, "path": str(usb), "all": "1", "zk": "1"}, timeout=30)
    assert done.status_code == 200 and "Ekspor selesai" in done.text
    (folder,) = [p for p in usb.iterdir() if p.is_dir()]
    lines = (folder / f"{DEVICE}_attlog.dat").read_text().splitlines()
    assert len(lines) == count(state) and all(len(line.split("\t")) == 5 for line in lines)
    with punchlog.PunchLog(state, readonly=True) as log:
        codes = [r["details"].get("work_code", 0) for r in log.records()]
    assert [int(line.split("\t")[4]) for line in lines] == codes and 3 in codes


# -- attacks on POST /kiosk/work-code ---------------------------------------------------------------------


def test_a_lan_host_cannot_choose_or_answer_a_work_code(kiosk):
    daemon, base, state = kiosk
    app = web_server.build_app(daemon)
    body = json.dumps({"code": 4}).encode()
    status, _, answer = call_asgi(app, "POST", "/kiosk/work-code", body, {"content-type": "application/json"})
    assert status == 403 and "terminal's own screen" in json.loads(answer)["error"]
    # a TLS proxy on the terminal connects from 127.0.0.1 for every client: its header marks it remote
    r = requests.post(base + "/kiosk/work-code", json={"code": 4}, headers={"X-Forwarded-For": "10.1.2.3"},
                      timeout=10)
    assert r.status_code == 403
    assert daemon.punches.chooser.peek() is None


@pytest.mark.parametrize("body,status,text", [
    ({"code": 99}, 409, "Kode kerja 99 tidak dikenal"),
    ({"code": 0}, 409, "tidak dikenal"),
    ({"code": True}, 400, ""),
    ({"code": "1"}, 400, ""),
    ({"code": 1, "employee": BUDI}, 400, ""),
    ({"code": 256}, 400, ""),
    ({"token": "x" * 30, "code": 1}, 409, "Waktu memilih kode kerja sudah habis"),
], ids=["unknown", "zero", "bool", "string", "extra-field", "too-big", "no-offer-open"])
def test_forged_choices_are_refused_and_nothing_is_armed(kiosk, body, status, text):
    daemon, base, state = kiosk
    before = count(state)
    r = requests.post(base + "/kiosk/work-code", json=body, timeout=10)
    assert r.status_code == status, r.text
    assert text in r.json()["error"]
    assert daemon.punches.chooser.peek() is None and count(state) == before


def test_an_oversized_or_form_encoded_choice_is_refused(kiosk):
    daemon, base, state = kiosk
    r = requests.post(base + "/kiosk/work-code", data=b'{"code": 1, "pad": "' + b"x" * 5000 + b'"}',
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 413
    r = requests.post(base + "/kiosk/work-code", data={"code": "1"}, timeout=10)  # a cross-site form post
    assert r.status_code == 400
    assert daemon.punches.chooser.peek() is None


def test_an_offer_takes_only_its_own_token_and_codes_that_apply(kiosk):
    """While an employee's punch waits for the choice: a wrong token, a code that was not offered or that
    does not apply to the punch's kind, and a second answer are refused; the punch gets the one real choice."""
    daemon, base, state = kiosk
    seen: list[dict] = []
    q = daemon.events.subscribe()
    try:
        t, box = in_thread(daemon.punches.punch, ANDI, "face", details={})
        deadline = time.monotonic() + 20
        while not any(e.type == "workcode" for e in seen) and time.monotonic() < deadline:
            try:
                seen.append(q.get(timeout=0.5))
            except Exception:
                pass
    finally:
        daemon.events.unsubscribe(q)
    offer = next(e.data for e in seen if e.type == "workcode")
    offered = {c["code"] for c in offer["codes"]}
    post = lambda b: requests.post(base + "/kiosk/work-code", json=b, timeout=10)  # noqa: E731
    assert post({"token": offer["token"][:-2] + "xx", "code": 2}).status_code == 409
    assert post({"token": offer["token"], "code": 99}).status_code == 409
    for code in {1, 4} - offered:  # Dinas Luar and Lembur apply to some kinds only
        refused = post({"token": offer["token"], "code": code})
        assert refused.status_code == 409 and "tidak berlaku" in refused.json()["error"]
    assert t.is_alive(), "a refused answer must not end the offer"
    assert post({"token": offer["token"], "code": 3}).status_code == 200
    t.join(20)
    assert box["outcome"].record["details"]["work_code"] == 3
    assert post({"token": offer["token"], "code": 2}).status_code == 409  # answered: the token is spent
    with punchlog.PunchLog(state, readonly=True) as log:
        assert log.get(box["outcome"].record["seq"])["details"]["work_code"] == 3
