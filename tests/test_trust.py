"""Issue 14, the central server's side: nobody but the terminal can add, change or re-time a punch.

Each test is an attack an office-LAN attacker would try against the reference central server over real HTTP
on 127.0.0.1, with the real push client, the real CLI and real SQLite files: a laptop holding only the
device's token (copied from presensi.toml) after its own `presensi init`; a forged record at the real head's
seq + 1; a forged new log_id; a rewrite of delivered punch times; a replayed batch; and, while a clone
keeps attacking, the real terminal's punches must all arrive exactly once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time

import pytest
import requests
import synthlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from synctools import make_terminal, presensi, serve_in_thread, signed_post

from sync.device import push
from sync.server.app import add_device, make_app
from sync.wire import signed
from terminal import identity
from terminal.log import chain, punchlog, syncstate
from terminal.timing import timeline

PUNCHES = "/api/v1/devices/dev-01/punches"
TIMES = "/api/v1/devices/dev-01/punch-times"


@pytest.fixture
def central(tmp_path):
    app = make_app(str(tmp_path / "central.db"))
    with serve_in_thread(app) as url:
        yield app, url
    app.store.close()


def pusher_for(tmp, url, reg, **central) -> push.Pusher:
    _, cfg = make_terminal(tmp, url, reg, **central)
    return push.Pusher(cfg.state_dir, push.Settings.from_config(cfg))


def kinds(app) -> list[str]:
    return sorted(a["kind"] for a in app.store.alarms("dev-01"))


def forged_record(log_id: str, seq: int, prev_hash: str, employee: str) -> dict:
    """A well-formed, correctly hash-chained record: what a forger can always compute."""
    now = time.time_ns()
    rec = {"log_id": log_id, "seq": seq, "employee": employee, "method": "pin", "kind": "masuk",
           "details": {}, "boot_id": "forged-boot", "monoraw_ns": now, "boottime_ns": now, "realtime_ns": now,
           "timex_status": 0, "maxerror_us": 16000, "latitude": None, "longitude": None, "photo_sha256": None,
           "prev_hash": prev_hash}
    rec["hash"] = chain.record_hash(prev_hash, rec)
    return rec


def stored(app) -> list[tuple[int, str, str]]:
    return [(p["seq"], p["employee"], p["hash"]) for p in app.store.iter_punches("dev-01")]


# -- a token alone never suffices -----------------------------------------------------------------------


def test_token_only_clone_before_the_real_device_first_delivered(central, tmp_path):
    app, url = central
    reg = add_device(app.store, "dev-01")  # no key given: a one-time enrolment code for the real terminal
    clone = pusher_for(tmp_path / "clone", url, reg["token"])  # the token from presensi.toml, its own key
    synthlog.fill(clone.state_dir, 5)
    with pytest.raises(push.PushError, match="no bound key"):
        clone.drain(time.monotonic() + 10)
    guessed = pusher_for(tmp_path / "guess", url, reg["token"], enrolment_code="0" * 24)
    synthlog.fill(guessed.state_dir, 5)
    with pytest.raises(push.PushError, match="enrolment code is wrong"):
        guessed.drain(time.monotonic() + 10)
    assert app.store.punch_count() == 0 and app.store.device("dev-01")["public_key"] is None
    assert set(kinds(app)) == {"not-enrolled"}

    real = pusher_for(tmp_path / "real", url, reg)  # token and enrolment code
    synthlog.fill(real.state_dir, 20)
    assert real.drain(time.monotonic() + 30)["done"]
    real_key = identity.public_key_b64(identity.load_key(real.state_dir))
    assert app.store.device("dev-01")["public_key"] == real_key
    assert [s for s, _, _ in stored(app)] == list(range(1, 21))
    # The code is spent: a clone that copied it too (after the real device enrolled) gets nothing.
    late = pusher_for(tmp_path / "late", url, reg)
    synthlog.fill(late.state_dir, 3)
    with pytest.raises(push.PushError, match="not bound to this device"):
        late.drain(time.monotonic() + 10)
    assert app.store.punch_count() == 20
    assert [a["action"] for a in app.store.device_audit("dev-01")] == ["add", "enrolled", "log-announced"]


def test_token_only_clone_with_the_key_bound_on_the_command_line(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, {"token": "pending"})
    real_key = identity.public_key_b64(identity.load_key(real.state_dir))
    reg = add_device(app.store, "dev-01", real_key)  # bound on the command line
    real.close()
    clone = pusher_for(tmp_path / "clone", url, reg["token"])
    with punchlog.PunchLog(clone.state_dir) as log:  # punches for other employees
        for emp in ("199912312020121001", "199912312020121002"):
            log.append(emp, "pin", kind="masuk")
    with pytest.raises(push.PushError, match="not bound to this device"):
        clone.drain(time.monotonic() + 10)  # before the real terminal ever delivered
    assert app.store.punch_count() == 0
    real = pusher_for(tmp_path / "real", url, reg)
    synthlog.fill(real.state_dir, 30)
    assert real.drain(time.monotonic() + 30)["done"]
    before = stored(app)

    with pytest.raises(push.PushError, match="not bound to this device"):
        clone.drain(time.monotonic() + 10)  # and after
    with pytest.raises(push.PushError):
        push.Heartbeat(clone.state_dir, clone.s).beat()
    with pytest.raises(push.PushError):
        push.send_punch_times(clone.s, real.log.log_id, [{"seq": 1, "utc": "2020-01-01T00:00:00.000Z",
                                                           "earliest": None, "latest": None, "basis": "manual"}])
    assert stored(app) == before  # nothing of the clone's counts, or is even stored
    assert "unknown-key" in kinds(app)
    assert all("199912312020121001" != emp for _, emp, _ in stored(app))


def test_add_device_prints_and_binds_the_fingerprint_init_printed(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[device]\nid = "dev-01"\n[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    init = presensi("-c", cfg, "init")
    fingerprint = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("device key"))
    key = json.loads(presensi("-c", cfg, "init", "--json").stdout)["public_key"]
    assert fingerprint.startswith("SHA256:") and fingerprint == chain.key_fingerprint(key)
    db = tmp_path / "central.db"
    out = presensi("server", "add-device", "dev-01", "--public-key", key, "--db", db)
    assert fingerprint in out.stdout and "enrolment_code" not in out.stdout
    again = presensi("server", "add-device", "dev-01", "--public-key", key, "--db", db, check=False)
    assert again.returncode == 1 and "rebind-device" in again.stderr  # never a silent re-bind
    bad = presensi("server", "add-device", "dev-02", "--public-key", "not-a-key", "--db", db, check=False)
    assert bad.returncode == 1 and "presensi init" in bad.stderr


# -- forged records ----------------------------------------------------------------------------------------


def test_forged_append_at_head_plus_one_is_refused_and_the_real_record_counts(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"))
    synthlog.fill(real.state_dir, 10)
    assert real.drain(time.monotonic() + 30)["done"]
    head_seq, head_hash = real.log.head()
    token = real.s.token
    forged = forged_record(real.log.log_id, head_seq + 1, head_hash, "199912312020121009")
    body = json.dumps({"log_id": real.log.log_id, "after_seq": head_seq, "records": [forged]}).encode()
    own_key = Ed25519PrivateKey.generate()
    for key in (None, own_key):  # unsigned, and signed by a key of the attacker's own
        r = signed_post(url, PUNCHES, body, token, key)
        assert r.status_code in (401, 403), r.text
    assert app.store.punch_count() == 10
    with punchlog.PunchLog(real.state_dir) as log:
        rec = log.append("198501012010011001", "pin", kind="pulang")
    assert real.drain(time.monotonic() + 30)["done"]
    assert stored(app)[-1] == (11, "198501012010011001", rec["hash"])
    assert syncstate.kept_aside(real.conn, real.target) == []
    assert {"unsigned", "unknown-key"} <= set(kinds(app)) and "conflict" not in kinds(app)


def test_a_second_version_is_kept_aside_and_never_counted_as_delivered(central, tmp_path):
    """The terminal's database was rewritten at a delivered seq and its delivery state lost (restored from
    an old backup): it sends the seq again, with another hash. The first version stays, the second is kept
    with an alarm, and the terminal says it was NOT delivered."""
    app, url = central
    cfg_path, cfg = make_terminal(tmp_path / "real", url, add_device(app.store, "dev-01"))
    synthlog.fill(cfg.state_dir, 10)
    presensi("-c", cfg_path, "sync", "now")
    first = stored(app)
    with punchlog.PunchLog(cfg.state_dir) as log:
        rec = log.get(10)
    rewritten = {**rec, "employee": "199912312020121009"}
    new_hash = chain.record_hash(rewritten["prev_hash"], rewritten)
    conn = sqlite3.connect(punchlog.db_path(cfg.state_dir))
    conn.execute("DROP TRIGGER IF EXISTS punches_no_update")
    conn.execute("UPDATE punches SET employee=?, hash=? WHERE seq=10", (rewritten["employee"], new_hash))
    conn.execute("DELETE FROM sync_state")
    conn.commit()
    conn.close()
    again = presensi("-c", cfg_path, "sync", "now", check=False)
    assert again.returncode == 1 and "kept 1 punch(es) aside" in again.stderr and "NOT delivered" in again.stderr
    assert stored(app) == first  # the stored version is not displaced
    assert "conflict" in kinds(app)
    assert app.store.query("SELECT seq, hash FROM punch_conflicts") == [{"seq": 10, "hash": new_hash}]
    status = json.loads(presensi("-c", cfg_path, "sync", "status", "--json").stdout)
    assert status["kept_aside"] == [10] and status["ok"] is False


def test_forged_new_log_id_is_refused(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"))
    synthlog.fill(real.state_dir, 3)
    assert real.drain(time.monotonic() + 30)["done"]
    new_log = "f" * 32
    batch = {"log_id": new_log, "after_seq": 0, "records": [forged_record(new_log, 1, chain.GENESIS, "19991231")]}
    raw = json.dumps(batch).encode()
    assert signed_post(url, PUNCHES, raw, real.s.token, Ed25519PrivateKey.generate()).status_code == 403
    # Even signed by the device key, a new log needs its announcement, made for this device and this log.
    r = signed_post(url, PUNCHES, raw, real.s.token, real.s.key)
    assert r.status_code == 403 and "log_announcement" in r.json()["error"]
    elsewhere = signed.announce_log(real.s.key, "dev-02", new_log)
    r = signed_post(url, PUNCHES, json.dumps({**batch, "log_announcement": elsewhere}).encode(), real.s.token,
                    real.s.key)
    assert r.status_code == 403
    assert app.store.punch_count() == 3 and not app.store.log_known("dev-01", new_log)
    assert "unannounced-log" in kinds(app)


def test_replayed_batch_is_refused(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"))
    synthlog.fill(real.state_dir, 5)
    body, _ = real.build_batch(0)
    raw = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {real.s.token}", "Content-Type": "application/json",
               **signed.sign_request(real.s.key, "POST", PUNCHES, "dev-01", raw, real.s.enrolment_code)}
    first = requests.post(url + PUNCHES, data=raw, headers=headers, timeout=10)
    assert first.status_code == 200 and first.json()["stored"] == 5
    again = requests.post(url + PUNCHES, data=raw, headers=headers, timeout=10)  # captured and sent again
    assert again.status_code == 409 and "replay" in again.json()["error"]
    other_path = requests.post(url + "/api/v1/devices/dev-01/heartbeat", data=raw, headers=headers, timeout=10)
    assert other_path.status_code == 401  # the signature covers the path: not reusable elsewhere
    assert app.store.punch_count() == 5 and "replay" in kinds(app)


def test_bounds_and_gaps(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"))
    synthlog.fill(real.state_dir, 3)
    assert real.drain(time.monotonic() + 30)["done"]
    log_id, (_, head) = real.log.log_id, real.log.head()

    def send(records, **extra):
        body = json.dumps({"log_id": log_id, "records": records, **extra}).encode()
        return signed_post(url, PUNCHES, body, real.s.token, real.s.key)

    r = send([forged_record(log_id, 2**62, head, "1985")])
    assert r.status_code == 400 and "seq" in r.json()["error"]
    r = send([forged_record(log_id, 4, head, "x" * 1_000_000)])
    assert r.status_code == 400 and "employee" in r.json()["error"]
    assert app.store.punch_count() == 3
    r = send([forged_record(log_id, 9, "0" * 64, "198501012010011001")])  # no after_seq, seqs 4-8 skipped
    assert r.status_code == 200
    gap = [a for a in app.store.alarms("dev-01") if a["kind"] == "gap"]
    assert len(gap) == 1 and gap[0]["seq"] == 4 and "4-8" in gap[0]["message"]
    assert app.store.acked_through("dev-01", log_id) == 3  # nothing assumed delivered that was not


# -- corrected times ---------------------------------------------------------------------------------------


def test_punch_times_rewrite_is_refused_validated_and_kept_with_history(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"))
    synthlog.fill(real.state_dir, 3)
    assert real.drain(time.monotonic() + 30)["done"]
    log_id = real.log.log_id
    original = {p["seq"]: (p["utc"], p["earliest"], p["latest"]) for p in app.store.iter_punches("dev-01")}

    def times(**t):
        body = json.dumps({"log_id": log_id, "times": [{"seq": 2, **t}]}).encode()
        return signed_post(url, TIMES, body, real.s.token, real.s.key)

    rewrite = {"utc": "2020-01-01T00:00:00.000Z", "earliest": "garbage", "latest": None, "basis": "manual"}
    clone = signed_post(url, TIMES, json.dumps({"log_id": log_id, "times": [{"seq": 2, **rewrite}]}).encode(),
                        real.s.token, Ed25519PrivateKey.generate())
    assert clone.status_code == 403
    assert times(**rewrite).status_code == 400  # "garbage" is no time
    r = times(utc="2020-01-01T00:00:00.000Z", earliest="2026-01-01T00:00:00.000Z",
              latest="2026-01-01T00:00:01.000Z", basis="server-signed")
    assert r.status_code == 400 and "outside" in r.json()["error"]
    r = times(utc="2026-01-01T00:00:00.500Z", earliest="2026-01-01T00:00:00.000Z",
              latest="2026-01-01T00:00:01.000Z", basis="a-basis-nobody-knows")
    assert r.status_code == 400 and "basis" in r.json()["error"]
    now = {p["seq"]: (p["utc"], p["earliest"], p["latest"]) for p in app.store.iter_punches("dev-01")}
    assert now == original and "time-moved" not in kinds(app)

    first = ("2026-01-01T00:00:00.500Z", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z")
    assert times(utc=first[0], earliest=first[1], latest=first[2], basis="server-signed").json() == {"updated": 1}
    narrower = times(utc="2026-01-01T00:00:00.600Z", earliest="2026-01-01T00:00:00.400Z",
                     latest="2026-01-01T00:00:00.800Z", basis="server-signed")
    assert narrower.json() == {"updated": 1} and "time-moved" not in kinds(app)  # within what was known
    moved = times(utc="2020-01-01T00:00:00.500Z", earliest="2020-01-01T00:00:00.000Z",
                  latest="2020-01-01T00:00:01.000Z", basis="server-signed")
    assert moved.json() == {"updated": 1}
    alarm = [a for a in app.store.alarms("dev-01") if a["kind"] == "time-moved"]
    assert len(alarm) == 1 and alarm[0]["seq"] == 2
    history = app.store.query("SELECT utc, basis FROM time_revisions WHERE seq=2 ORDER BY id")
    assert [h["utc"] for h in history] == [first[0], "2026-01-01T00:00:00.600Z", "2020-01-01T00:00:00.500Z"]
    p2 = [p for p in app.store.iter_punches("dev-01") if p["seq"] == 2][0]
    assert p2["utc"] == "2020-01-01T00:00:00.500Z"  # device-signed, so applied, but alarmed and with history
    assert chain.record_hash(p2["prev_hash"], {**p2, "details": json.loads(p2["details"])}) == p2["hash"]


def test_terminal_time_bases_are_all_accepted():
    assert set(timeline.SOURCES) <= set(signed.TIME_BASES)


# -- a clone attacking while the real device delivers -----------------------------------------------------


def test_real_punches_arrive_exactly_once_while_a_clone_attacks(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"), batch_size=50)
    synthlog.fill(real.state_dir, 400)
    token, log_id = real.s.token, real.log.log_id
    stop, attempts, accepted = threading.Event(), [], []
    clone_key = Ed25519PrivateKey.generate()

    def attack():
        seq = 1
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline and len(attempts) < 2000:
            rec = forged_record(log_id, seq, chain.GENESIS if seq == 1 else "0" * 64, "199912312020121009")
            body = json.dumps({"log_id": log_id, "after_seq": seq - 1, "records": [rec],
                               "log_announcement": signed.announce_log(clone_key, "dev-01", log_id)}).encode()
            r = signed_post(url, PUNCHES, body, token, clone_key)
            attempts.append(r.status_code)
            if r.status_code == 200:
                accepted.append(seq)
            seq = seq % 450 + 1

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        while len(attempts) < 5:  # the clone is already attacking when delivery starts
            time.sleep(0.01)
        assert real.drain(time.monotonic() + 120)["done"]
        with punchlog.PunchLog(real.state_dir) as log:
            for i in range(20):  # and punches keep coming while it attacks
                log.append(f"19850101201001{i:04d}", "pin", kind="pulang")
        assert real.drain(time.monotonic() + 60)["done"]
    finally:
        stop.set()
        attacker.join(30)
    assert len(attempts) >= 5 and not accepted and set(attempts) == {403}
    with punchlog.PunchLog(real.state_dir) as log:
        expected = [(r["seq"], r["employee"], r["hash"]) for r in log.records()]
    assert stored(app) == expected and len(expected) == 420  # every real punch, once, exactly as recorded
    assert app.store.acked_through("dev-01", log_id) == 420
    assert app.store.query("SELECT count(*) AS n FROM punch_conflicts")[0]["n"] == 0
    assert "unknown-key" in kinds(app) and syncstate.kept_aside(real.conn, real.target) == []


# -- the central server at rest and at the door -------------------------------------------------------------


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_keys_photos_and_templates_are_protected_at_rest(central, tmp_path):
    app, url = central
    db = tmp_path / "central.db"
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"))
    jpeg = b"\xff\xd8" + b"FACE-PIXELS-OF-AN-EMPLOYEE" * 40 + b"\xff\xd9"
    with punchlog.PunchLog(real.state_dir) as log:
        log.append("198501012010011001", "face", kind="masuk", photo_jpeg=jpeg)
    assert real.drain(time.monotonic() + 30)["done"]
    template = b"FINGER-TEMPLATE-BYTES" * 20
    app.store.publish_roster(1, b"roster-bundle:" + template)
    assert app.store.latest_roster()["bundle"] == b"roster-bundle:" + template
    rows = app.store.query("SELECT sha256 FROM photos")
    assert app.store.photo(rows[0]["sha256"]) == jpeg
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    raw = db.read_bytes() + (db.with_name("central.db-wal").read_bytes() if db.with_name(
        "central.db-wal").exists() else b"")
    assert b"FACE-PIXELS" not in raw and b"FINGER-TEMPLATE" not in raw and b"PRIVATE KEY" not in raw
    assert mode(db) == 0o600 and mode(tmp_path / "central.db.keys") == 0o700
    assert {p.name: mode(p) for p in (tmp_path / "central.db.keys").iterdir()} == {
        "server_key.pem": 0o600, "data.key": 0o600}
    for suffix in ("-wal", "-shm"):
        if (tmp_path / f"central.db{suffix}").exists():
            assert mode(tmp_path / f"central.db{suffix}") == 0o600


def test_an_old_database_is_fixed_with_a_warning(tmp_path):
    """A database written by the previous version: 0644, the signing key in server_meta, photos in clear."""
    db = tmp_path / "old.db"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE server_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO server_meta VALUES ('server_key', ?)", (pem.decode(),))
    conn.execute("CREATE TABLE photos (sha256 TEXT PRIMARY KEY, device_id TEXT NOT NULL, data BLOB NOT NULL, "
                 "received_ns BIGINT NOT NULL)")
    conn.execute("INSERT INTO photos VALUES ('ab', 'dev-01', ?, 1)", (b"OLD-CLEAR-PHOTO",))
    conn.commit()
    conn.close()
    os.chmod(db, 0o644)
    out = presensi("server", "alarms", "--db", db)
    assert "0644" in out.stderr and "moved" in out.stderr and "encrypted 1 photos" in out.stderr
    assert mode(db) == 0o600
    assert (tmp_path / "old.db.keys" / "server_key.pem").read_bytes() == pem  # the same key: rosters still verify
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM server_meta WHERE key='server_key'").fetchone()[0] == 0
        assert conn.execute("SELECT data FROM photos").fetchone()[0][:4] == b"PSE1"
    again = presensi("server", "alarms", "--db", db)
    assert "0644" not in again.stderr and "moved" not in again.stderr


def test_front_page_and_cli_show_nothing_personal_or_raw(central, tmp_path):
    app, url = central
    real = pusher_for(tmp_path / "real", url, add_device(app.store, "dev-01"))
    evil = "1985\x1b[2J\x1b]0;pwned\x07\u202e"
    with punchlog.PunchLog(real.state_dir) as log:
        log.append("198501012010011001", "pin", kind="masuk")
        log.append(evil, "pin", kind="masuk\x1b[31m")
    assert real.drain(time.monotonic() + 30)["done"]
    page = requests.get(url + "/", timeout=10)  # without a login: the login page only
    assert page.status_code == 200 and page.url == url + "/login"
    assert "198501012010011001" not in page.text and "dev-01" not in page.text and "\x1b" not in page.text
    db = tmp_path / "central.db"
    for args in (["server", "punches", "--db", db], ["server", "punches", "--db", db, "--json"],
                 ["server", "alarms", "--db", db]):
        out = presensi(*args).stdout
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "1985\\x1b[2J" in presensi("server", "punches", "--db", db).stdout


def test_concurrent_first_requests_of_the_real_device_all_enrol(central, tmp_path):
    """The heartbeat and the first batch race to redeem the code: both are the device's key, both count."""
    app, url = central
    reg = add_device(app.store, "dev-01")
    real = pusher_for(tmp_path / "real", url, reg)
    body = json.dumps({"log_id": real.log.log_id}).encode()
    answers: list[int] = []

    def beat():
        r = signed_post(url, "/api/v1/devices/dev-01/heartbeat", body, reg["token"], real.s.key,
                        enrolment_code=reg["enrolment_code"])
        answers.append(r.status_code)

    threads = [threading.Thread(target=beat) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == [200] * 8 and "not-enrolled" not in kinds(app)
    assert app.store.device("dev-01")["public_key"] == identity.public_key_b64(real.s.key)
