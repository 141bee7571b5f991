"""The central server's pages in a real headless Chromium against `presensi server run` on 127.0.0.1 (SQLite
and PostgreSQL), with real terminals delivering to it through `presensi punch`, `presensi fault report` and
`presensi sync now` and their heartbeats: login per role and refusal without one, the fleet page with a
healthy, a silent and a faulty terminal (its fault photo shown), acknowledging and closing a fault, the
punches page; screenshots at 1280x800 and 390x844 in artifacts/."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
from browser_support import Browser
from conftest import SHARED, wait_for
from synctools import ServerProcess, free_port, make_terminal, presensi

from sync.device import push
from sync.server.app import add_device
from sync.server.storage import open_store
from terminal import __version__ as terminal_version
from terminal import config as config_mod
from terminal.app import heartbeat

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
PASSWORD = "kata-sandi-yang-panjang"
NIPS = ("198501012010011001", "199002022015022002")
SILENT_AFTER = 8.0  # seconds: the healthy terminals beat every 0.5 s, the silent one stops at once
EVIDENCE = SHARED / "data" / "liveness" / "image_T1.jpg"

HEALTHY, SILENT, FAULTY = "opd-dinkes-01", "opd-bappeda-02", "opd-disdik-03"


class Fleet:
    """A central server process and three terminals, each with its own state directory and config."""

    def __init__(self, tmp: Path, db: str):
        self.tmp, self.db = tmp, db
        self.server = ServerProcess(db, free_port(), ("--silent-after", SILENT_AFTER, "--check-every", 0.3))
        self.url = self.server.start()
        self.store = open_store(db)
        self.configs: dict[str, Path] = {}
        self.beats: list[push.Heartbeat] = []
        for user, role in (("dk", "diskominfo"), ("bk", "bkpsdm"), ("root", "admin")):
            presensi("server", "user", "add", user, "--role", role, "--password-stdin", "--db", db,
                     input=PASSWORD + "\n")

    def terminal(self, device: str, fingerprint: str) -> Path:
        reg = add_device(self.store, device)
        path, _ = make_terminal(self.tmp, self.url, reg, device=device, server_key=reg["server_key"])
        with path.open("a") as f:
            f.write(fingerprint)
        self.configs[device] = path
        return path

    def sync(self, device: str) -> None:
        presensi("sync", "now", "--timeout", 60, "-c", self.configs[device])

    def keep_beating(self, device: str) -> None:
        cfg = config_mod.load(str(self.configs[device]))
        beat = push.Heartbeat(cfg.state_dir, push.Settings.from_config(cfg), heartbeat.cached(cfg))
        beat.start()
        self.beats.append(beat)

    def close(self) -> None:
        for b in self.beats:
            b.stop()
        for b in self.beats:
            b.join(10)
        self.server.stop()
        self.store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def fleet(request, tmp_path, monkeypatch):
    monkeypatch.setenv("PRESENSI_SERVER_KEY_DIR", str(tmp_path / "server.keys"))  # the server process too
    db = str(tmp_path / "central.db") if request.param == "sqlite" else request.getfixturevalue("pg")()
    f = Fleet(tmp_path, db)
    f.backend = request.param
    yield f
    f.close()


def login(browser: Browser, url: str, user: str) -> None:
    browser.navigate(url + "/login")
    browser.submit("#login", {"username": user, "password": PASSWORD})
    browser.wait_for("!location.pathname.startsWith('/login')")


def logout(browser: Browser) -> None:
    browser.js("document.querySelector('form.logout').requestSubmit()")
    browser.wait_for("location.pathname === '/login' && document.readyState === 'complete'")


def shoot(browser: Browser, name: str) -> None:
    for width, height, mobile in ((1280, 800, False), (390, 844, True)):
        browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                     mobile=mobile)
        browser.navigate(browser.js("location.href"))
        overflow = browser.js("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} at {width} px is {overflow} px wider than the screen"
        browser.screenshot(ARTIFACTS / f"server-{name}-{width}x{height}.png")
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1, mobile=False)


def server_faults(db: str, device: str, reporter: str | None = None) -> list[dict]:
    """`presensi server faults --json` of one device (only those of `reporter`: a terminal registered a
    while before its first delivery was briefly silent too, which the server rightly raised and cleared)."""
    out = presensi("server", "faults", "--device", device, "--json", "--db", db).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    return [f for f in rows if reporter is None or (f["reporter"] == "server") == (reporter == "server")]


def text(browser: Browser, selector: str) -> str:
    return browser.js(f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText")


def test_fleet_faults_and_punches_pages_per_role(fleet, browser, tmp_path):
    url = fleet.url
    # three terminals: healthy (an emulated sensor, no port needed), one that goes silent, one with a broken
    # fingerprint adapter and a camera fault reported with a photo
    fleet.terminal(HEALTHY, '[fingerprint]\nenabled = true\nmodel = "emulator"\n')
    fleet.terminal(SILENT, "")
    fleet.terminal(FAULTY, '[fingerprint]\nenabled = true\nport = "/dev/presensi-no-such-port"\n')
    punched = [json.loads(presensi("punch", "--employee", nip, "--method", "pin", "--json", "-c",
                                   fleet.configs[HEALTHY]).stdout) for nip in NIPS]
    presensi("fault", "report", "--category", "camera", "--message", "Kamera retak, gambar buram",
             "--photo", EVIDENCE, "--reporter", "Budi (operator)", "-c", fleet.configs[FAULTY])
    for device in (HEALTHY, SILENT, FAULTY):
        fleet.sync(device)
    fleet.keep_beating(HEALTHY)
    fleet.keep_beating(FAULTY)

    # without a login: the login page, nothing personal, no photo
    assert requests.get(url + "/fleet", allow_redirects=False, timeout=10).headers["Location"] == "/login"
    [fault] = server_faults(fleet.db, FAULTY, "terminal")
    photo_url = f"{url}/faults/{FAULTY}/{fault['event_id']}/photo"
    anonymous = requests.get(photo_url, allow_redirects=False, timeout=10)
    assert anonymous.status_code == 303 and anonymous.content == b""
    for path in ("/", "/fleet", "/punches", f"/devices/{FAULTY}", "/accounts"):
        browser.navigate(url + path)
        assert browser.js("location.pathname") == "/login"
        page = browser.js("document.body.innerText")
        assert HEALTHY not in page and NIPS[0] not in page

    browser.navigate(url + "/login")
    shoot(browser, "login")

    # Diskominfo: the fleet at a glance; the silent terminal becomes a fault by itself
    login(browser, url, "dk")
    assert browser.js("location.pathname") == "/fleet"

    def silent_row():
        browser.navigate(url + "/fleet")
        return browser.js(f"(() => {{ const r = document.getElementById('device-{SILENT}');"
                          f" return r && r.classList.contains('silent') && r.innerText; }})()")
    row = wait_for(silent_row, 60, "the silent terminal highlighted on the fleet page")
    assert "tidak ada kabar" in row
    healthy = text(browser, f"#device-{HEALTHY}")
    assert "tidak ada kabar" not in healthy and browser.js(
        f"document.getElementById('device-{HEALTHY}').className.trim()") == ""
    cells = browser.js(f"Object.fromEntries([...document.querySelectorAll('#device-{HEALTHY} td')]"
                       ".map(td => [td.className, td.innerText]))")
    for part in ("part-fingerprint", "part-clock", "part-disk", "part-database", "part-roster"):
        assert cells[part] == "baik", (part, cells)
    assert (cells["backlog"], cells["version"]) == ("0", terminal_version)
    faulty = text(browser, f"#device-{FAULTY}")
    assert "camera: Kamera retak" in faulty
    assert browser.js(f"document.querySelector('#device-{FAULTY} .part-fingerprint').innerText") == "rusak"
    silent_faults = server_faults(fleet.db, SILENT)
    assert (silent_faults[0]["reporter"], silent_faults[0]["state"], silent_faults[0]["part"]) == (
        "server", "open", "connection")
    assert all(f["state"] == "cleared" for f in silent_faults[1:])
    shoot(browser, "fleet")

    # the faulty terminal's page: the photo is decrypted and shown; acknowledge, then close, with notes
    browser.navigate(url + f"/devices/{FAULTY}")
    fid = f"#fault-{fault['event_id']}"
    browser.wait_for(f"document.querySelector('{fid} img.evidence').complete")
    assert browser.js(f"document.querySelector('{fid} img.evidence').naturalWidth") > 100
    assert "Budi (operator)" in text(browser, fid) and "terbuka" in text(browser, fid)
    shoot(browser, "device")
    browser.submit(f"{fid} form.ack-form", {"note": "teknisi berangkat 14.00"})
    assert "sedang ditangani" in text(browser, "#notice")
    assert re.search(r"Ditangani oleh dk pada .*: teknisi berangkat 14.00", text(browser, fid))
    browser.submit(f"{fid} form.close-form", {"note": "kamera diganti"})
    assert re.search(r"Ditutup oleh dk pada .*: kamera diganti", text(browser, fid))
    assert "ditutup" in text(browser, f"{fid} .state")
    [closed] = server_faults(fleet.db, FAULTY, "terminal")
    assert (closed["state"], closed["photo"], closed["reporter"]) == ("closed", True, "Budi (operator)")
    assert closed["acknowledged"]["by"] == "dk" and closed["closed"]["note"] == "kamera diganti"
    browser.navigate(url + "/fleet")
    assert text(browser, f"#device-{FAULTY} .open-faults") == "0"

    # the silent terminal calls again: its server-raised fault clears by itself
    fleet.sync(SILENT)
    fleet.keep_beating(SILENT)  # and stays in contact
    wait_for(lambda: {f["state"] for f in server_faults(fleet.db, SILENT)} == {"cleared"}, 60,
             "the server-raised fault of the silent terminal cleared")
    assert not silent_row()

    # Diskominfo may not list punches
    browser.navigate(url + "/punches")
    assert "Akses ditolak" in text(browser, "h1") and NIPS[0] not in browser.js("document.body.innerText")
    logout(browser)

    # BKPSDM: the punches the terminal recorded, with kind and lateness; no fleet, no fault photos
    login(browser, url, "bk")
    assert browser.js("location.pathname") == "/punches"
    rows = browser.js("[...document.querySelectorAll('tr.punch')].map(tr => ['employee', 'kind', 'late']"
                      ".map(c => tr.querySelector('.' + c).innerText))")
    late = {p["employee"]: p["derived"]["minutes_late"] for p in punched}
    expected = [(p["employee"], p["derived"]["kind"].capitalize(), f"{late[p['employee']]} menit"
                 if late[p["employee"]] else "-") for p in punched]
    assert sorted(map(tuple, rows)) == sorted(expected)
    browser.navigate(url + f"/punches?employee={NIPS[1]}")
    assert [r[0] for r in browser.js("[...document.querySelectorAll('tr.punch')].map(tr => "
                                     "[tr.querySelector('.employee').innerText])")] == [NIPS[1]]
    assert "Rekap bulanan" in text(browser, "nav")
    browser.navigate(url + "/punches")
    shoot(browser, "punches")
    for path in ("/fleet", f"/devices/{FAULTY}"):
        browser.navigate(url + path)
        assert "Akses ditolak" in text(browser, "h1")
    browser.navigate(photo_url)  # BKPSDM never sees a fault's photo
    assert "Akses ditolak" in text(browser, "h1") and browser.js("document.images.length") == 0
    logout(browser)

    # the admin sees everything, and the audit of what happened
    login(browser, url, "root")
    for path, marker in (("/fleet", FAULTY), ("/punches", NIPS[0]), ("/accounts", "fault-close")):
        browser.navigate(url + path)
        assert marker in browser.js("document.body.innerText"), path
    audit = browser.js("document.body.innerText")
    for action in ("login", "login", "fault-acknowledge", "fault-photo-viewed", "forbidden", "logout"):
        assert action in audit
    logout(browser)


def test_user_commands_refuse_what_would_be_a_weak_or_wrong_account(tmp_path):
    db = str(tmp_path / "central.db")

    def user(*args, password: str | None = PASSWORD):
        return presensi("server", "user", *args, "--db", db, check=False,
                        **({"input": password + "\n"} if password is not None else {"stdin": subprocess.DEVNULL}))

    assert user("add", "budi", "--role", "diskominfo", "--password-stdin").returncode == 0
    cases = [(("add", "budi", "--role", "bkpsdm", "--password-stdin"), PASSWORD, "exists already"),
             (("add", "sri", "--role", "bkpsdm", "--password-stdin"), "pendek", "at least 12 characters"),
             (("add", "Sri Wahyuni", "--role", "bkpsdm", "--password-stdin"), PASSWORD, "not valid"),
             (("passwd", "nobody", "--password-stdin"), PASSWORD, "no user 'nobody'"),
             (("add", "sri", "--role", "bkpsdm"), None, "--password-stdin")]  # no terminal to ask on
    for args, password, message in cases:
        out = user(*args, password=password)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
    listed = json.loads(presensi("server", "user", "list", "--json", "--db", db).stdout)
    assert [(a["username"], a["role"]) for a in listed] == [("budi", "diskominfo")]
    store = open_store(db)
    try:
        assert "kata-sandi" not in json.dumps(store.query("SELECT * FROM accounts"))  # only the scrypt hash
        assert json.loads(store.query("SELECT password FROM accounts")[0]["password"])["kdf"] == "scrypt"
        actions = [a["action"] for a in store.query("SELECT action FROM web_audit ORDER BY id")]
        assert actions == ["account-added"]
    finally:
        store.close()
    assert user("passwd", "budi", "--password-stdin", password=PASSWORD + "-baru").returncode == 0


def test_the_punches_page_pages_through_fifty_at_a_time(tmp_path):
    import synthlog
    from synctools import serve_in_thread

    from sync.server import accounts
    from sync.server.app import make_app

    app = make_app(str(tmp_path / "central.db"))
    accounts.add(app.store, "sri", "bkpsdm", PASSWORD, actor="test")
    reg = add_device(app.store, "dev-01")
    with serve_in_thread(app) as url:
        _, cfg = make_terminal(tmp_path, url, reg)
        synthlog.fill(cfg.state_dir, 120)
        pusher = push.Pusher(cfg.state_dir, push.Settings.from_config(cfg))
        assert pusher.drain(time.monotonic() + 60)["done"]
        pusher.close()
        s = requests.Session()
        token = re.search(r'name="csrf" value="([^"]+)"', s.get(url + "/login", timeout=10).text).group(1)
        s.post(url + "/login", data={"csrf": token, "username": "sri", "password": PASSWORD}, timeout=10)
        seen, page = [], 1
        while True:
            html = s.get(url + "/punches", params={"device": "dev-01", "page": page}, timeout=10).text
            rows = html.count('<tr class="punch">')
            seen.append(rows)
            if 'rel="next"' not in html:
                break
            page += 1
        assert seen == [50, 50, 20]
    app.store.close()


def test_the_heartbeat_reports_each_part_the_fleet_page_shows(tmp_path):
    """terminal/app/heartbeat.py on a real state directory: the daemon's live camera and sensor health
    override what the status parts can see; what the server makes of it is sync/server/fleet.py's."""
    from sync.server import fleet as server_fleet

    path, _ = make_terminal(tmp_path, "http://127.0.0.1:9", "t", device="opd-x")
    with path.open("a") as f:
        f.write('[fingerprint]\nenabled = true\nmodel = "emulator"\n')
    cfg = config_mod.load(str(path))
    live = {"camera": {"ok": False, "error": "no frame from /dev/video0 for 5 s"}, "fingerprint": None}
    now = [0.0]
    health = heartbeat.cached(cfg, lambda: {"time_verified": False}, lambda: live, clock=lambda: now[0])
    first = health()
    parts = first["parts"]
    assert first["time_verified"] is False  # the kiosk's indicators stay beside the parts
    assert parts["camera"] == {"ok": False, "summary": "no frame from /dev/video0 for 5 s"}
    assert parts["fingerprint"]["ok"] is None  # the daemon does not run the sensor here
    assert parts["database"]["ok"] is True and parts["disk"]["ok"] is True and parts["disk"]["free_mb"] > 0
    assert parts["clock"]["ok"] is False and parts["clock"]["basis"] == "wall-clock"
    assert parts["roster"]["version"] == 0
    live["camera"] = {"ok": True, "summary": "30 fps"}
    now[0] = heartbeat.CACHE_S - 1
    assert health()["parts"]["camera"]["ok"] is False  # cached within CACHE_S
    now[0] = heartbeat.CACHE_S
    assert health()["parts"]["camera"] == {"ok": True, "summary": "30 fps"}  # recomputed after it
    shown = {p.name: p.ok for p in server_fleet.parts({"health": first})}
    assert shown == {"camera": False, "fingerprint": None, "clock": False, "disk": True, "database": True,
                     "roster": True}
    json.dumps(first)  # what the heartbeat sends is plain JSON
