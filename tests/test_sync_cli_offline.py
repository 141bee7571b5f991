"""The sync commands as users run them (real processes, real HTTP on 127.0.0.1): `presensi server run`,
`server add-device`, `sync now|status`, `server punches|alarms`, and offline delivery with `presensi export
--to DIR` and `presensi server import DIR`."""

from __future__ import annotations

import csv
import io
import json

import pytest
from synctools import ServerProcess, free_port, make_terminal, presensi


@pytest.fixture
def central(tmp_path):
    db = tmp_path / "central.db"
    server = ServerProcess(str(db), free_port())
    url = server.start()
    reg = json.loads(presensi("server", "add-device", "kab-dinkes-01", "--db", db, "--json").stdout)
    yield server, url, reg, db
    server.stop()


def test_sync_now_status_and_server_listing(central, tmp_path):
    server, url, reg, db = central
    assert set(reg) == {"device", "token", "server_key", "enrolment_code"} and reg["device"] == "kab-dinkes-01"
    cfg, _ = make_terminal(tmp_path, url, reg, device="kab-dinkes-01")
    for emp in ("198501012010011001", "199002022015022002", "198803032012031003"):
        presensi("-c", cfg, "punch", "--employee", emp, "--method", "pin")
    done = presensi("-c", cfg, "sync", "now")
    assert "all delivered: acked seq 3 of 3" in done.stdout
    status = json.loads(presensi("-c", cfg, "sync", "status", "--json").stdout)
    assert status["backlog"] == 0 and status["acked_seq"] == 3 and status["last_contact_ns"]
    overall = json.loads(presensi("-c", cfg, "status", "--json").stdout)
    assert overall["sync"]["backlog"] == 0
    rows = [json.loads(line) for line in presensi("server", "punches", "--db", db, "--json").stdout.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3] and rows[1]["employee"] == "199002022015022002"
    assert set(rows[0]) == {"device", "log_id", "seq", "employee", "method", "kind", "utc", "earliest",
                            "latest", "basis", "flags", "recorded_kind", "derived", "work_code"}
    # the kind travels beside the record (derived from the corrected time), not inside the hash
    assert rows[0]["recorded_kind"] == "" and rows[0]["kind"] == rows[0]["derived"]["kind"] != ""
    text = presensi("server", "punches", "--db", db).stdout.splitlines()
    assert len(text) == 3 and text[0].split("\t")[:3] == ["kab-dinkes-01", rows[0]["log_id"], "1"]
    assert presensi("server", "alarms", "--db", db).stdout.strip() == "no alarms"

    # The server goes away: `sync now` fails clearly, nothing is lost, status shows the error.
    server.stop()
    presensi("-c", cfg, "punch", "--employee", "197001012000011009", "--method", "pin")
    failed = presensi("-c", cfg, "sync", "now", "--timeout", "1", check=False)
    assert failed.returncode == 1
    assert "1 punches" in failed.stderr and "Nothing is lost" in failed.stderr and "cannot reach" in failed.stderr
    status = json.loads(presensi("-c", cfg, "sync", "status", "--json").stdout)
    assert status["backlog"] == 1 and status["last_attempt_failed"] and "cannot reach" in status["last_error"]
    assert "last error" in presensi("-c", cfg, "sync", "status").stdout


def test_wrong_token_is_a_clear_error(central, tmp_path):
    _, url, _, _ = central
    cfg, _ = make_terminal(tmp_path, url, "wrong-token", device="kab-dinkes-01")
    presensi("-c", cfg, "punch", "--employee", "198501012010011001", "--method", "pin")
    failed = presensi("-c", cfg, "sync", "now", "--timeout", "5", check=False)
    assert failed.returncode == 1 and "refused the device token" in failed.stderr
    assert "add-device" in failed.stderr


def test_offline_export_and_import_dedupes_against_push(central, tmp_path):
    server, url, reg, db = central
    cfg, _ = make_terminal(tmp_path, url, reg, device="kab-dinkes-01")
    for i in range(3):
        presensi("-c", cfg, "punch", "--employee", f"19850101201001100{i}", "--method", "pin")
    presensi("-c", cfg, "sync", "now")
    server.stop()  # weeks offline
    for i in range(4):
        presensi("-c", cfg, "punch", "--employee", f"19900202201502200{i}", "--method", "pin")
    stick = tmp_path / "usb"
    out = json.loads(presensi("-c", cfg, "export", "--to", stick, "--json").stdout)
    assert (out["first_seq"], out["last_seq"], out["count"]) == (4, 7, 4)
    folder = stick / out["dir"].rsplit("/", 1)[-1]
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoints.jsonl", "manifest.json", "manifest.sig",
                                                        "punches.csv", "punches.jsonl", "samples.jsonl"]
    csv_lines = (folder / "punches.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("log_id,seq,employee")
    # the kind travels as a derived value beside the record: a readable column, and `derived` in jsonl
    rows_csv = list(csv.DictReader(io.StringIO((folder / "punches.csv").read_text())))
    assert all(r["kind"] == "" and r["derived_kind"] for r in rows_csv)

    imported = json.loads(presensi("server", "import", stick, "--db", db, "--json").stdout)
    assert (imported["stored"], imported["duplicates"], imported["acked_through"]) == (4, 0, 7)
    stored = {json.loads(r)["seq"]: json.loads(r) for r in
              presensi("server", "punches", "--db", db, "--json").stdout.splitlines()}
    assert [stored[s]["kind"] for s in (4, 5, 6, 7)] == [r["derived_kind"] for r in rows_csv]
    assert all(stored[s]["derived"]["revision"] >= 1 for s in (4, 5, 6, 7))
    again = json.loads(presensi("server", "import", stick, "--db", db, "--json").stdout)
    assert (again["stored"], again["duplicates"]) == (0, 4)
    # The network comes back: the terminal still pushes 4-7 (not acked over the network); all duplicates.
    server.start()
    presensi("-c", cfg, "sync", "now")
    rows = presensi("server", "punches", "--db", db, "--json").stdout.splitlines()
    assert [json.loads(r)["seq"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert presensi("server", "alarms", "--db", db).stdout.strip() == "no alarms"


def test_import_refuses_altered_or_foreign_exports(central, tmp_path):
    _, url, reg, db = central
    cfg, _ = make_terminal(tmp_path, url, reg, device="kab-dinkes-01")
    presensi("-c", cfg, "punch", "--employee", "198501012010011001", "--method", "pin")
    stick = tmp_path / "usb"
    folder = stick / json.loads(presensi("-c", cfg, "export", "--to", stick, "--json").stdout)["dir"].rsplit("/")[-1]
    # The terminal never contacted the server, so its key is not bound yet: the stick cannot vouch for itself.
    refused = presensi("server", "import", stick, "--db", db, check=False)
    assert refused.returncode == 1 and "not bound" in refused.stderr
    key = json.loads(presensi("-c", cfg, "init", "--json").stdout)["public_key"]
    presensi("server", "rebind-device", "kab-dinkes-01", "--public-key", key, "--reason", "offline site", "--db", db)

    data = folder / "punches.jsonl"
    original = data.read_text()
    data.write_text(original.replace("198501012010011001", "199912312020121001"))
    refused = presensi("server", "import", stick, "--db", db, check=False)
    assert refused.returncode == 1 and "does not match the signed manifest" in refused.stderr
    data.write_text(original)

    manifest = folder / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"count": 1', '"count": 2'))
    refused = presensi("server", "import", stick, "--db", db, check=False)
    assert refused.returncode == 1 and "signature does not match" in refused.stderr
    manifest.write_text(text)

    unknown = tmp_path / "other.db"
    refused = presensi("server", "import", stick, "--db", unknown, check=False)
    assert refused.returncode == 1 and "not registered" in refused.stderr
    assert json.loads(presensi("server", "import", stick, "--db", db, "--json").stdout)["stored"] == 1


def test_server_commands_on_postgresql(tmp_path, pg):
    db = pg()
    reg = json.loads(presensi("server", "add-device", "kab-bkpsdm-01", "--db", db, "--json").stdout)
    server = ServerProcess(db, free_port())
    url = server.start()
    try:
        cfg, _ = make_terminal(tmp_path, url, reg, device="kab-bkpsdm-01")
        presensi("-c", cfg, "punch", "--employee", "198501012010011001", "--method", "pin")
        presensi("-c", cfg, "sync", "now")
    finally:
        server.stop()
    rows = [json.loads(r) for r in presensi("server", "punches", "--db", db, "--json").stdout.splitlines()]
    assert [(r["device"], r["seq"], r["employee"]) for r in rows] == [("kab-bkpsdm-01", 1, "198501012010011001")]
    assert presensi("server", "alarms", "--db", db).stdout.strip() == "no alarms"
