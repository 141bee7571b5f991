"""What someone on the office LAN would try against the central server's pages (SQLite and PostgreSQL, the
server on 127.0.0.1 with a real terminal delivering to it): forms without or with a wrong CSRF token, from
another site, a session cookie planted before login (fixation), forged and replayed cookies, guessing
passwords, a fault photo's URL without a login or with the wrong role, SQL in the filters, oversized
bodies. Each is refused and changes nothing that counts."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import pytest
import requests
import synthlog
from synctools import make_terminal, serve_in_thread

from sync.device import push
from sync.server import accounts, fleet
from sync.server.app import add_device, make_app
from terminal.log import punchlog
from terminal.ops import faults

PASSWORD = "kata-sandi-yang-panjang"
NIP = "198501012010011001"
JPEG = b"\xff\xd8\xff\xe0" + b"bukti-kerusakan" * 50 + b"\xff\xd9"


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path):
    db = str(tmp_path / "central.db") if request.param == "sqlite" else request.getfixturevalue("pg")()
    app = make_app(db)
    for user, role in (("dk", "diskominfo"), ("bk", "bkpsdm"), ("root", "admin")):
        accounts.add(app.store, user, role, PASSWORD, actor="test")
    reg = add_device(app.store, "dev-01")
    with serve_in_thread(app) as url:
        _, cfg = make_terminal(tmp_path, url, reg)
        synthlog.fill(cfg.state_dir, 5)
        with punchlog.PunchLog(cfg.state_dir) as log:
            log.append(NIP, "pin", kind="masuk")
        conn = punchlog.connect(punchlog.db_path(cfg.state_dir))
        faults.report(conn, cfg.state_dir, category="camera", message="kamera retak", photo_jpeg=JPEG)
        conn.close()
        pusher = push.Pusher(cfg.state_dir, push.Settings.from_config(cfg))
        assert pusher.drain(time.monotonic() + 60)["done"]
        pusher.close()
        [f] = fleet.faults(app.store, "dev-01")
        yield app, url, f
    app.store.close()


def login_page(s: requests.Session, url: str) -> str:
    r = s.get(url + "/login", timeout=10)
    return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)


def logged_in(url: str, user: str) -> requests.Session:
    s = requests.Session()
    r = s.post(url + "/login", data={"csrf": login_page(s, url), "username": user, "password": PASSWORD},
               allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.text
    return s


def csrf_of(s: requests.Session, url: str, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', s.get(url + path, timeout=10).text).group(1)


def audit_actions(app) -> list[str]:
    return [a["action"] for a in accounts.audit_log(app.store, 1000)]


def test_forms_without_the_right_csrf_token_change_nothing(server):
    app, url, f = server
    dk, other = logged_in(url, "dk"), logged_in(url, "root")
    path = f"/faults/dev-01/{f['event_id']}/close"
    good = csrf_of(dk, url, "/devices/dev-01")
    attempts = [({"note": "x"}, {}), ({"note": "x", "csrf": "wrong"}, {}),
                ({"note": "x", "csrf": csrf_of(other, url, "/fleet")}, {}),  # another session's token
                ({"note": "x", "csrf": good}, {"Origin": "http://evil.example"}),  # a cross-site form
                ({"note": "x", "csrf": good}, {"Origin": "null"})]
    for data, headers in attempts:
        for action in ("acknowledge", "close"):
            r = dk.post(url + path.replace("close", action), data=data, headers=headers, allow_redirects=False,
                        timeout=10)
            assert r.status_code == 403, (data, headers, r.status_code)
            assert "ditolak" in r.text or "CSRF" in r.text
    bk = logged_in(url, "bk")  # a valid token of its own, but not the role that may close faults
    r = bk.post(url + path, data={"csrf": csrf_of(bk, url, "/punches"), "note": "x"}, allow_redirects=False,
                timeout=10)
    assert r.status_code == 403 and "Akses ditolak" in r.text
    assert fleet.fault(app.store, "dev-01", f["event_id"])["state"] == "open"
    assert audit_actions(app).count("csrf-refused") == 6
    r = dk.post(url + "/logout", data={}, allow_redirects=False, timeout=10)
    assert r.status_code == 403 and dk.get(url + "/fleet", allow_redirects=False, timeout=10).status_code == 200
    # the login form: its double-submit token must match the cookie the login page set
    fresh = requests.Session()
    login_page(fresh, url)
    for token in ("", "forged"):
        r = fresh.post(url + "/login", data={"csrf": token, "username": "dk", "password": PASSWORD},
                       allow_redirects=False, timeout=10)
        assert r.status_code == 403 and "presensi_server=" not in r.headers.get("Set-Cookie", "")
    # with the right token it works, and the fault closes with who and the note
    r = dk.post(url + path, data={"csrf": good, "note": "diganti"}, allow_redirects=False, timeout=10)
    assert r.status_code == 303
    closed = fleet.fault(app.store, "dev-01", f["event_id"])
    assert closed["state"] == "closed" and closed["closed"]["by"] == "dk" and closed["closed"]["note"] == "diganti"
    again = dk.post(url + path, data={"csrf": good}, allow_redirects=False, timeout=10)
    assert again.status_code == 409 and "sudah ditutup" in again.text


def test_planted_forged_and_replayed_session_cookies_get_nothing(server):
    app, url, _ = server
    # fixation: a cookie the attacker chose, or the attacker's own live session, planted before the login
    attacker = logged_in(url, "bk")
    planted = attacker.cookies.get("presensi_server")
    for value in ("attacker-chosen-value", planted):
        victim = requests.Session()
        victim.cookies.set("presensi_server", value)
        r = victim.post(url + "/login", data={"csrf": login_page(victim, url), "username": "dk",
                                              "password": PASSWORD}, allow_redirects=False, timeout=10)
        new = re.search(r"presensi_server=([^;]+)", r.headers["Set-Cookie"]).group(1)
        assert r.status_code == 303 and new not in ("", value)
        assert requests.get(url + "/fleet", cookies={"presensi_server": value}, allow_redirects=False,
                            timeout=10).status_code == 303  # the planted value never became the victim's
    # forged cookies: random, the stored hash of a real token (a copy of the database), odd sizes
    real = logged_in(url, "dk").cookies.get("presensi_server")
    altered = real[:-1] + ("B" if real.endswith("A") else "A")
    forged = [secrets.token_urlsafe(32), hashlib.sha256(real.encode()).hexdigest(), altered, "", "x" * 4000,
              '"quoted"']
    for value in forged:
        r = requests.get(url + "/fleet", headers={"Cookie": f"presensi_server={value}"}, allow_redirects=False,
                         timeout=10)
        assert r.status_code == 303 and r.headers["Location"] == "/login" and "dev-01" not in r.text
    # replay after logout, and after the password was changed elsewhere
    s = logged_in(url, "dk")
    token = s.cookies.get("presensi_server")
    s.post(url + "/logout", data={"csrf": csrf_of(s, url, "/fleet")}, timeout=10)
    assert requests.get(url + "/fleet", cookies={"presensi_server": token}, allow_redirects=False,
                        timeout=10).status_code == 303
    s = logged_in(url, "dk")
    accounts.set_password(app.store, "dk", PASSWORD + "-baru", actor="test")
    assert s.get(url + "/fleet", allow_redirects=False, timeout=10).status_code == 303
    cookie = s.get(url + "/login", timeout=10).headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_password_guessing_is_throttled_and_audited(server):
    app, url, _ = server
    s = requests.Session()
    for _ in range(accounts.FREE_FAILURES):
        r = s.post(url + "/login", data={"csrf": login_page(s, url), "username": "dk", "password": "tebakan-salah"},
                   allow_redirects=False, timeout=10)
        assert r.status_code == 401 and "salah" in r.text
    started = time.monotonic()
    r = s.post(url + "/login", data={"csrf": login_page(s, url), "username": "dk", "password": PASSWORD},
               allow_redirects=False, timeout=10)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "Coba lagi" in r.text
    assert "presensi_server=" not in r.headers.get("Set-Cookie", "").replace("presensi_server_login=", "")
    # another account from the same address is locked too (the address guesses)
    r = s.post(url + "/login", data={"csrf": login_page(s, url), "username": "bk", "password": PASSWORD},
               allow_redirects=False, timeout=10)
    assert r.status_code == 429
    assert audit_actions(app).count("login-failed") == accounts.FREE_FAILURES  # refused ones were not checked

    def right_password_works():
        r = s.post(url + "/login", data={"csrf": login_page(s, url), "username": "dk", "password": PASSWORD},
                   allow_redirects=False, timeout=10)
        return r.status_code == 303
    deadline = time.monotonic() + 30
    while not right_password_works():
        assert time.monotonic() < deadline, "the lock never ended"
        time.sleep(0.2)
    assert time.monotonic() - started >= accounts.lock_for(accounts.FREE_FAILURES) - 0.5
    assert accounts.lock_for(accounts.FREE_FAILURES + 12) == accounts.MAX_LOCK  # it grows, but never for ever


def test_a_fault_photo_is_only_for_a_logged_in_diskominfo_or_admin(server):
    app, url, f = server
    photo = f"{url}/faults/dev-01/{f['event_id']}/photo"
    anonymous = requests.get(photo, allow_redirects=False, timeout=10)
    assert anonymous.status_code == 303 and JPEG not in anonymous.content
    bk = logged_in(url, "bk")
    refused = bk.get(photo, allow_redirects=False, timeout=10)
    assert refused.status_code == 403 and JPEG not in refused.content
    for user in ("dk", "root"):
        r = logged_in(url, user).get(photo, timeout=10)
        assert r.status_code == 200 and r.content == JPEG and r.headers["Content-Type"] == "image/jpeg"
    dk = logged_in(url, "dk")
    for path in (f"/faults/dev-01/{f['event_id'] + 1}/photo", "/faults/dev-02/1/photo",
                 "/faults/dev-01/abc/photo", "/faults/..%2Fdev-01/1/photo", "/faults/dev-01/1%27%20OR%201=1/photo"):
        r = dk.get(url + path, allow_redirects=False, timeout=10)
        assert r.status_code in (400, 404) and JPEG not in r.content, path
    assert "fault-photo-viewed" in audit_actions(app) and "forbidden" in audit_actions(app)


def test_sql_in_the_filters_is_only_text(server):
    app, url, _ = server
    bk = logged_in(url, "bk")
    assert NIP in bk.get(url + "/punches", timeout=10).text
    for query in ({"employee": "' OR '1'='1"}, {"employee": f"{NIP}' --"}, {"device": "x' UNION SELECT * FROM "
                                                                                      "accounts --"},
                  {"device": "dev-01'; DROP TABLE punches; --"}):
        r = bk.get(url + "/punches", params=query, timeout=10)
        assert r.status_code == 200 and "Tidak ada presensi yang cocok" in r.text and 'class="punch"' not in r.text, \
            query
    for query in ({"day": "2026-01-01' OR '1'='1"}, {"page": "-1"}, {"page": "1 OR 1=1"}, {"employee": "\x00"}):
        r = bk.get(url + "/punches", params=query, timeout=10)
        assert r.status_code == 400 and "tidak valid" in r.text, query
    assert app.store.punch_count() == 6 and NIP in bk.get(url + "/punches", params={"employee": NIP}, timeout=10).text
    s = requests.Session()
    r = s.post(url + "/login", data={"csrf": login_page(s, url), "username": "dk' --", "password": "' OR '1'='1"},
               allow_redirects=False, timeout=10)
    assert r.status_code == 401


def test_oversized_or_odd_login_bodies_are_refused(server):
    _, url, _ = server
    s = requests.Session()
    token = login_page(s, url)
    r = s.post(url + "/login", data={"csrf": token, "username": "dk", "password": "x" * 10_000},
               allow_redirects=False, timeout=10)
    assert r.status_code == 413
    r = s.post(url + "/login", data=b"\xff\xfe", headers={"Content-Type": "application/x-www-form-urlencoded"},
               allow_redirects=False, timeout=10)
    assert r.status_code == 400
    r = s.post(url + "/login", json={"csrf": token, "username": "dk", "password": PASSWORD}, allow_redirects=False,
               timeout=10)
    assert r.status_code == 415
