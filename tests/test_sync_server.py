"""The push client against the reference central server over real HTTP on 127.0.0.1, on SQLite and on a
throwaway PostgreSQL cluster: delivery, dedupe, chain alarms, photos, faults, punch-times, roster, auth."""

from __future__ import annotations

import gzip
import json
import sqlite3
import time

import pytest
import requests
import synthlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from synctools import make_terminal, serve_in_thread, signed_post

from sync.device import push
from sync.server.app import add_device, make_app
from terminal import identity
from terminal.log import chain, punchlog


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path):
    """(app, base url, device registration) on the chosen backend."""
    db = str(tmp_path / "central.db") if request.param == "sqlite" else request.getfixturevalue("pg")()
    app = make_app(db)
    reg = add_device(app.store, "dev-01")
    with serve_in_thread(app) as url:
        yield app, url, reg
    app.store.close()


def _pusher(tmp_path, url, reg, **central):
    _, cfg = make_terminal(tmp_path, url, reg, **central)
    return push.Pusher(cfg.state_dir, push.Settings.from_config(cfg)), cfg


def _tamper(state_dir, sql: str, params=()) -> None:
    """What an attacker with the SD card does: drop the append-only triggers and change the table."""
    conn = sqlite3.connect(punchlog.db_path(state_dir))
    for t in ("punches_no_update", "punches_no_delete", "checkpoints_no_update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {t}")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_backlog_delivered_once_with_chain_and_photo(server, tmp_path):
    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg, batch_size=200)
    synthlog.fill(cfg.state_dir, 1000)
    with punchlog.PunchLog(cfg.state_dir) as log:
        photo_rec = log.append("198501012010011001", "face", kind="masuk", photo_jpeg=b"\xff\xd8fake-jpeg\xff\xd9")
    result = pusher.drain(time.monotonic() + 60)
    assert result == {"done": True, "last_error": None, "punches": 0, "photos": 0, "faults": 0}
    assert app.store.punch_count("dev-01") == 1001
    assert app.store.acked_through("dev-01", pusher.log.log_id) == 1001
    assert app.store.alarms() == []
    assert app.store.photo_count() == 1
    stored = list(app.store.iter_punches("dev-01"))
    assert [p["seq"] for p in stored] == list(range(1, 1002))
    assert stored[-1]["hash"] == photo_rec["hash"] and stored[-1]["photo_sha256"] == photo_rec["photo_sha256"]
    assert not list(chain.check_records(
        ({**p, "details": json.loads(p["details"])} for p in stored), pusher.log.log_id))
    assert all(p["problems"] == "[]" for p in stored)

    # A resend of an already acknowledged batch (a response lost on the way) changes nothing.
    body, _ = pusher.build_batch(0)
    r = signed_post(url, "/api/v1/devices/dev-01/punches", json.dumps(body).encode(), reg["token"],
                    identity.load_key(cfg.state_dir), gzip_body=True)
    assert r.status_code == 200 and r.json()["duplicates"] == 200 and r.json()["stored"] == 0
    assert r.json()["acked_through"] == 1001
    assert app.store.punch_count() == 1001 and app.store.alarms() == []
    assert pusher.push_batch() == 0  # nothing pending


def test_deleted_and_edited_records_raise_alarms_without_blocking(server, tmp_path):
    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg, batch_size=100)
    synthlog.fill(cfg.state_dir, 300)
    _tamper(cfg.state_dir, "DELETE FROM punches WHERE seq = 150")
    _tamper(cfg.state_dir, "UPDATE punches SET employee = 'someone-else' WHERE seq = 220")
    assert pusher.drain(time.monotonic() + 60)["done"]
    alarms = {a["kind"]: a for a in app.store.alarms("dev-01")}
    assert alarms["missing"]["seq"] == 150 and "deleted" in alarms["missing"]["message"]
    assert alarms["edited"]["seq"] == 220
    assert app.store.acked_through("dev-01", pusher.log.log_id) == 300  # the queue is not blocked
    assert app.store.punch_count("dev-01") == 299  # the edited record is kept, flagged
    flagged = [p for p in app.store.iter_punches("dev-01") if p["problems"] != "[]"]
    assert [(p["seq"], json.loads(p["problems"])) for p in flagged] == [(220, ["edited"])]


def test_rewrite_after_delivery_is_detected(server, tmp_path):
    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg)
    synthlog.fill(cfg.state_dir, 100)
    assert pusher.drain(time.monotonic() + 30)["done"]
    # Rewrite the delivered head consistently (content and hash), then keep punching.
    with punchlog.PunchLog(cfg.state_dir) as log:
        rec = log.get(100)
    rec["employee"] = "ghost"
    new_hash = chain.record_hash(rec["prev_hash"], rec)
    _tamper(cfg.state_dir, "UPDATE punches SET employee='ghost', hash=? WHERE seq=100", (new_hash,))
    push.Heartbeat(cfg.state_dir, pusher.s).beat()
    synthlog.fill(cfg.state_dir, 5)
    assert pusher.drain(time.monotonic() + 30)["done"]
    kinds = {a["kind"] for a in app.store.alarms("dev-01")}
    assert {"rewritten", "broken-link"} <= kinds
    assert app.store.acked_through("dev-01", pusher.log.log_id) == 105


def test_wrong_token_gets_401_everywhere_and_a_clear_client_error(server, tmp_path):
    app, url, reg = server
    other = add_device(app.store, "dev-02")
    calls = [("post", "/api/v1/devices/dev-01/punches"), ("post", "/api/v1/devices/dev-01/heartbeat"),
             ("post", "/api/v1/devices/dev-01/faults"), ("post", "/api/v1/devices/dev-01/punch-times"),
             ("put", "/api/v1/devices/dev-01/photos/" + "0" * 64), ("get", "/api/v1/devices/dev-01/roster"),
             ("post", "/api/v1/time")]
    for method, path in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic xyz"}):
            r = requests.request(method, url + path, headers=headers, data=b"{}", timeout=10)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert "token" in r.json()["error"]
        if path != "/api/v1/time":
            r = requests.request(method, url + path, data=b"{}", timeout=10,
                                 headers={"Authorization": f"Bearer {other['token']}"})
            assert r.status_code == 403 and "dev-02" not in r.json()["error"]  # never whose token it is
    pusher, cfg = _pusher(tmp_path, url, {**reg, "token": "not-the-token"})
    synthlog.fill(cfg.state_dir, 3)
    with pytest.raises(push.PushError, match="add-device"):
        pusher.drain(time.monotonic() + 10)
    assert pusher.backlog() == 3


def test_punch_times_faults_heartbeat_roster_and_page(server, tmp_path):
    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg)
    synthlog.fill(cfg.state_dir, 10)
    assert pusher.drain(time.monotonic() + 30)["done"]
    log_id = pusher.log.log_id
    reply = push.send_punch_times(pusher.s, log_id, [
        {"seq": 3, "utc": "2026-01-05T00:01:02.003Z", "earliest": "2026-01-05T00:01:01.000Z",
         "latest": "2026-01-05T00:01:03.000Z", "basis": "server-signed", "flags": []}])
    assert reply == {"updated": 1}
    p3 = [p for p in app.store.iter_punches("dev-01") if p["seq"] == 3][0]
    assert (p3["utc"], p3["basis"]) == ("2026-01-05T00:01:02.003Z", "server-signed")
    assert chain.record_hash(p3["prev_hash"], {**p3, "details": json.loads(p3["details"])}) == p3["hash"]

    key = identity.load_key(cfg.state_dir)

    def dev(method, path, data=b"", headers=None, gzip_body=False):
        return signed_post(url, path, data, reg["token"], key, method=method, headers=headers,
                           gzip_body=gzip_body)

    r = dev("POST", "/api/v1/devices/dev-01/faults", json.dumps({"events": [
        {"id": 1, "fault_key": "camera", "event": "raised", "part": "camera", "category": "missing",
         "message": "kamera tidak terdeteksi", "diagnostics": {"errno": 19}, "realtime_ns": 1}]}).encode())
    assert r.status_code == 200 and r.json() == {"acked_through": 1}
    assert app.store.faults("dev-01")[0]["message"] == "kamera tidak terdeteksi"

    hb = push.Heartbeat(cfg.state_dir, pusher.s).beat()
    assert hb["acked_through"] == 10
    assert app.store.device("dev-01")["last_heartbeat"]

    roster = "/api/v1/devices/dev-01/roster"
    assert dev("GET", roster).status_code == 204
    app.store.publish_roster(3, b"signed-bundle-bytes")
    r = dev("GET", roster + "?since=2")
    assert r.status_code == 200 and r.content == b"signed-bundle-bytes"
    assert dev("GET", roster + "?since=3").status_code == 304
    assert dev("GET", roster + "?since=x").status_code == 400
    unsigned = requests.get(url + roster, headers={"Authorization": f"Bearer {reg['token']}"}, timeout=10)
    assert unsigned.status_code == 401  # the templates in a roster go only to the device's key

    bad = dev("POST", "/api/v1/devices/dev-01/punches", b"\x00garbage")
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    gz = {"Content-Encoding": "gzip"}
    bomb = gzip.compress(b" " * (65 * 2**20), 9)  # 65 MiB of spaces in ~65 KiB
    r = dev("POST", "/api/v1/devices/dev-01/punches", bomb, headers=gz)
    assert r.status_code == 413 and "smaller batches" in r.json()["error"]
    r = dev("POST", "/api/v1/devices/dev-01/punches", gzip.compress(b'{"a": 1}')[:-6], headers=gz)
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    photo = dev("PUT", f"/api/v1/devices/dev-01/photos/{'a' * 64}", b"x", headers={"Content-Type": "image/jpeg"})
    assert photo.status_code == 400 and "SHA-256" in photo.json()["error"]

    page = requests.get(url + "/", timeout=10)  # no login: the login page, nothing of devices or punches
    assert page.status_code == 200 and page.url == url + "/login" and 'id="login"' in page.text
    assert "dev-01" not in page.text and p3["employee"] not in page.text
    doc = requests.get(url + "/api/v1/openapi.json", timeout=10).json()
    assert "/api/v1/devices/{device_id}/punches" in doc["paths"]


def test_retry_after_is_honoured_and_backoff_is_jittered(tmp_path):
    hits = []
    router = FastAPI()

    @router.post("/api/v1/devices/{device_id}/punches")
    async def busy(request: Request):
        hits.append(time.monotonic())
        if len(hits) == 1:
            return JSONResponse({"error": "busy"}, 429, {"Retry-After": "1"})
        if len(hits) == 2:
            return JSONResponse({"error": "down"}, 503)
        if len(hits) == 3:
            return HTMLResponse("<html>proxy error page</html>", 200)  # garbage with a 200
        raw = await request.body()
        body = json.loads(gzip.decompress(raw) if request.headers.get("content-encoding") == "gzip" else raw)
        return JSONResponse({"acked_through": body["records"][-1]["seq"]})

    with serve_in_thread(router) as url:
        _, cfg = make_terminal(tmp_path, url, "t", retry_base=0.01, max_backoff=0.05)
        synthlog.fill(cfg.state_dir, 5)
        slept = []
        pusher = push.Pusher(cfg.state_dir, push.Settings.from_config(cfg), sleep=lambda s: (slept.append(s),
                                                                                              time.sleep(s)))
        assert pusher.drain(time.monotonic() + 30)["done"]
    assert len(hits) == 4
    assert slept[0] >= 1.0 and hits[1] - hits[0] >= 1.0  # Retry-After: 1
    assert 0 <= slept[1] <= 0.05 and 0 <= slept[2] <= 0.05  # full jitter under the cap
    delays = [push.backoff_delay(5, 1.0, 900.0) for _ in range(200)]
    assert 0 <= min(delays) < 8 < max(delays) <= 32  # uniform over [0, 32]


def test_fault_events_and_their_photos_are_pushed_after_punches(server, tmp_path):
    from terminal.ops import faults
    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg)
    synthlog.fill(cfg.state_dir, 20)
    conn = pusher.conn
    faults.raise_fault(conn, "camera", part="camera", category="camera", message="kamera tidak terdeteksi",
                       diagnostics={"device": "/dev/video0"})
    faults.clear_fault(conn, "camera")
    jpeg = b"\xff\xd8\xff\xe0broken-sensor-photo\xff\xd9"
    faults.report(conn, cfg.state_dir, category="fingerprint", message="sensor retak", photo_jpeg=jpeg)
    assert pusher.pending() == {"punches": 20, "photos": 0, "faults": 3}
    assert pusher.drain(time.monotonic() + 30)["done"]
    stored = sorted(app.store.faults("dev-01"), key=lambda f: f["event_id"])
    assert [f["event"] for f in stored] == ["raised", "cleared", "report"]
    assert json.loads(stored[0]["diagnostics"]) == {"device": "/dev/video0"}
    assert stored[2]["message"] == "sensor retak" and app.store.photo_count() == 1
    assert pusher.pending()["faults"] == 0


def test_daemon_loop_delivers_new_punches_and_stops(server, tmp_path):
    import threading

    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg)
    stop = threading.Event()
    loop = threading.Thread(target=pusher.run, args=(stop, 0.1), daemon=True)
    loop.start()
    with punchlog.PunchLog(cfg.state_dir) as log:
        for _ in range(3):
            log.append("198501012010011001", "pin")
            time.sleep(0.05)
    deadline = time.monotonic() + 20
    while app.store.punch_count("dev-01") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    loop.join(10)
    assert not loop.is_alive()
    assert app.store.punch_count("dev-01") == 3 and pusher.backlog() == 0


def test_heartbeat_keeps_going_while_bulk_upload_fails(tmp_path):
    beats, uploads = [], []
    router = FastAPI()

    @router.post("/api/v1/devices/{device_id}/punches")
    def broken():
        uploads.append(1)
        return JSONResponse({"error": "database down"}, 500)

    @router.post("/api/v1/devices/{device_id}/heartbeat")
    async def heartbeat(request: Request):
        beats.append(json.loads(await request.body()))
        return JSONResponse({"ok": True, "acked_through": 0})

    with serve_in_thread(router) as url:
        _, cfg = make_terminal(tmp_path, url, "t", retry_base=0.05, max_backoff=0.2, heartbeat_interval=0.2)
        synthlog.fill(cfg.state_dir, 50)
        settings = push.Settings.from_config(cfg)
        beat = push.Heartbeat(cfg.state_dir, settings)
        beat.start()
        result = push.Pusher(cfg.state_dir, settings).drain(time.monotonic() + 1.5)
        beat.stop()
        beat.join(5)
    assert not result["done"] and result["punches"] == 50 and "HTTP 500" in result["last_error"]
    assert len(uploads) >= 3 and len(beats) >= 3
    assert beats[-1]["backlog"] == 50 and beats[-1]["head"]["seq"] == 50 and beats[-1]["version"]


def test_forged_checkpoint_signature_raises_an_alarm(server, tmp_path):
    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg)
    synthlog.fill(cfg.state_dir, 300)
    with punchlog.PunchLog(cfg.state_dir) as log:
        real = log.latest_checkpoint()
    # Someone re-signs checkpoint 200 with a key of their own (the server pinned the device's key at 100).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


    forged = chain.sign_b64(Ed25519PrivateKey.generate(), b"anything")
    _tamper(cfg.state_dir, "UPDATE checkpoints SET signature=? WHERE seq=200", (forged,))
    assert pusher.drain(time.monotonic() + 30)["done"]
    alarms = [a for a in app.store.alarms("dev-01") if a["kind"] == "bad-signature"]
    assert [a["seq"] for a in alarms] == [200]
    assert app.store.device("dev-01")["public_key"] == real["public_key"]
    assert app.store.acked_through("dev-01", pusher.log.log_id) == 300


def test_reimaged_terminal_is_refused_until_rebound(server, tmp_path):
    app, url, reg = server
    old, _ = _pusher(tmp_path / "old", url, reg)
    synthlog.fill(old.state_dir, 100)
    assert old.drain(time.monotonic() + 30)["done"]
    new, cfg = _pusher(tmp_path / "new", url, reg)  # same device id and token, fresh SD card: new log, new key
    synthlog.fill(cfg.state_dir, 100)
    with pytest.raises(push.PushError, match="not bound to this device"):
        new.drain(time.monotonic() + 30)
    assert app.store.punch_count("dev-01") == 100 and new.backlog() == 100  # nothing stored, nothing lost
    assert [a["kind"] for a in app.store.alarms("dev-01")] == ["unknown-key"]
    new_key = identity.public_key_b64(identity.load_key(cfg.state_dir))
    with pytest.raises(ValueError, match="rebind-device"):
        add_device(app.store, "dev-01", new_key)  # re-imaging is never a side effect of add-device
    again = add_device(app.store, "dev-01", new_key, rebind=True, actor="it-staff", reason="SD card replaced")
    assert again["token"] != reg["token"]
    renewed, cfg = _pusher(tmp_path / "new", url, again)
    assert renewed.drain(time.monotonic() + 30)["done"]
    assert sorted(a["kind"] for a in app.store.alarms("dev-01")) == ["new-log", "rebound", "unknown-key"]
    assert app.store.device("dev-01")["public_key"] == new_key
    assert app.store.punch_count("dev-01") == 200
    audit = [(a["action"], json.loads(a["details"]).get("reason")) for a in app.store.device_audit("dev-01")]
    assert ("rebind", "SD card replaced") in audit


def test_damaged_photo_is_skipped_not_blocking(server, tmp_path):
    app, url, reg = server
    pusher, cfg = _pusher(tmp_path, url, reg)
    with punchlog.PunchLog(cfg.state_dir) as log:
        bad = log.append("198501012010011001", "face", photo_jpeg=b"\xff\xd8original\xff\xd9")
        good = log.append("199002022015022002", "face", photo_jpeg=b"\xff\xd8second\xff\xd9")
    (cfg.state_dir / bad["photo_path"]).chmod(0o600)
    (cfg.state_dir / bad["photo_path"]).write_bytes(b"\xff\xd8bit-rot\xff\xd9")
    assert pusher.drain(time.monotonic() + 30)["done"]
    assert app.store.photo_count() == 1 and pusher.pending()["photos"] == 0
    refused = pusher.conn.execute("SELECT error FROM sync_attempts WHERE kind='photo' AND ok=0").fetchall()
    assert len(refused) == 1 and "SHA-256" in refused[0][0]
    assert good["photo_sha256"] != bad["photo_sha256"]
