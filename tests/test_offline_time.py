"""Offline delivery carries time: `presensi export --to DIR` writes each punch's interval (utc, earliest,
latest), basis and flags, and every time sample (samples.jsonl, in the signed manifest); `presensi server
import` stores the samples, re-anchors punches it already holds with the newer export's times, and checks
each interval against the samples. Real processes: the reference server, the terminal's commands; the truth
is this machine's clock, read around each punch."""

from __future__ import annotations

import json
import time

import pytest
from synctools import ServerProcess, free_port, make_terminal, presensi

from terminal import identity
from terminal.log import chain
from terminal.timing import timeline

DEVICE = "kab-dinkes-01"


@pytest.fixture(params=["sqlite"])
def central(request, tmp_path):
    db = str(tmp_path / "central.db") if request.param == "sqlite" else request.getfixturevalue("pg")()
    server = ServerProcess(db, free_port())
    url = server.start()
    reg = json.loads(presensi("server", "add-device", DEVICE, "--db", db, "--json").stdout)
    yield server, url, reg, db
    server.stop()


def bound_terminal(tmp_path, central, **settings):
    """A terminal whose key the server has bound (an export vouches only for a bound key): registered with
    the key `presensi init` prints, as an installer of an offline site does."""
    server, url, reg, db = central
    cfg, conf = make_terminal(tmp_path, url, reg["token"], device=DEVICE, **settings)
    key = json.loads(presensi("-c", cfg, "init", "--json").stdout)["public_key"]
    bound = json.loads(presensi("server", "rebind-device", DEVICE, "--public-key", key, "--reason",
                                "offline site", "--db", db, "--json").stdout)
    cfg.write_text(cfg.read_text().replace(f'token = "{reg["token"]}"', f'token = "{bound["token"]}"'))
    return cfg, conf


def export(cfg, stick) -> tuple[dict, object]:
    out = json.loads(presensi("-c", cfg, "export", "--to", stick, "--json").stdout)
    return out, stick / out["dir"].rsplit("/", 1)[-1]


def server_rows(db) -> dict[int, dict]:
    out = presensi("server", "punches", "--db", db, "--json").stdout
    return {r["seq"]: r for r in map(json.loads, out.splitlines())}


@pytest.mark.parametrize("central", ["sqlite", "postgresql"], indirect=True)
def test_a_later_export_re_anchors_punches_the_server_holds_and_carries_the_samples(central, tmp_path):
    server, url, reg, db = central
    cfg, conf = bound_terminal(tmp_path, central, server_key=reg["server_key"])
    server.stop()  # an office offline since its last power cut: no time sample in this boot
    truth = {}
    for i in range(3):
        before = time.time_ns()
        rec = json.loads(presensi("-c", cfg, "punch", "--employee", f"19850101201001100{i}", "--method", "pin",
                                  "--json").stdout)
        truth[rec["seq"]] = (before, time.time_ns())
    first, folder = export(cfg, tmp_path / "usb1")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "presensi-export/2" and "samples.jsonl" in manifest["files"]
    assert first["samples"] == 0 and (folder / "samples.jsonl").read_text() == ""
    lines = [json.loads(x) for x in (folder / "punches.jsonl").read_text().splitlines()]
    assert all(x["earliest"] is None and "no-time-sample" in x["flags"] and x["basis"] in ("none", "order")
               for x in lines)
    imported = json.loads(presensi("server", "import", tmp_path / "usb1", "--db", db, "--json").stdout)
    assert imported["stored"] == 3 and imported["samples"] == 0
    assert all(r["earliest"] is None for r in server_rows(db).values())

    # a technician's visit with network: one signed sample, no push; the next stick carries the new times
    server.start()
    assert presensi("-c", cfg, "time", "sync", "--no-push").returncode == 0
    server.stop()
    second, folder = export(cfg, tmp_path / "usb2")
    assert second["samples"] == 1 and (second["first_seq"], second["last_seq"]) == (1, 3)
    sample = json.loads((folder / "samples.jsonl").read_text())
    assert sample["source"] == "server-signed" and sample["status"] == "accepted" and sample["evidence"]
    imported = json.loads(presensi("server", "import", tmp_path / "usb2", "--db", db, "--json").stdout)
    assert (imported["stored"], imported["duplicates"], imported["samples"]) == (0, 3, 1)
    assert imported["reanchored"] == 3 and imported["time_mismatches"] == 0
    for seq, row in server_rows(db).items():
        before, after = truth[seq]
        assert row["basis"] == "server-signed" and "no-time-sample" not in row["flags"]
        assert timeline.parse_iso(row["earliest"]) <= after and before <= timeline.parse_iso(row["latest"]), row
        assert abs(timeline.parse_iso(row["utc"]) - (before + after) // 2) <= 2 * 10**9
    alarms = presensi("server", "alarms", "--db", db).stdout.splitlines()
    assert [a for a in alarms if " rebound " not in a] == [], alarms  # only the installer's audited binding
    again = json.loads(presensi("server", "import", tmp_path / "usb2", "--db", db, "--json").stdout)
    assert again["samples"] == 1 and again["duplicates"] == 3  # idempotent: the sample is stored once

    from sync.server.storage import open_store

    store = open_store(db)
    stored = store.time_samples(DEVICE)
    store.close()
    assert len(stored) == 1 and stored[0]["source"] == "server-signed" and stored[0]["evidence"]


def test_altered_samples_are_refused_by_the_signed_manifest(central, tmp_path):
    server, url, reg, db = central
    cfg, _ = bound_terminal(tmp_path, central, server_key=reg["server_key"])
    presensi("-c", cfg, "punch", "--employee", "198501012010011001", "--method", "pin")
    assert presensi("-c", cfg, "time", "sync", "--no-push").returncode == 0
    _, folder = export(cfg, tmp_path / "usb")
    path = folder / "samples.jsonl"
    sample = json.loads(path.read_text())
    path.write_text(json.dumps({**sample, "utc_ns": sample["utc_ns"] + 3600 * 10**9}) + "\n")  # an hour later
    refused = presensi("server", "import", tmp_path / "usb", "--db", db, check=False)
    assert refused.returncode == 1 and "samples.jsonl: content does not match the signed manifest" in refused.stderr
    assert server_rows(db) == {}


def resign(folder, state_dir, edit_manifest=None) -> None:
    """What only the terminal can do (its device key): rewrite the manifest after changing files."""
    import hashlib

    manifest = json.loads((folder / "manifest.json").read_text())
    for name in list(manifest["files"]):
        if (folder / name).exists():
            manifest["files"][name]["sha256"] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    if edit_manifest:
        edit_manifest(manifest)
    raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
    (folder / "manifest.json").write_bytes(raw)
    (folder / "manifest.sig").write_text(chain.sign_b64(identity.load_key(state_dir), raw))


def test_an_interval_that_contradicts_its_own_samples_raises_a_time_mismatch_alarm(central, tmp_path):
    """A terminal bug (or a corrupted estimate) the server can see: the export's interval lies an hour away
    from where its own samples put the punch, even at the kernel's largest clock rate error."""
    server, url, reg, db = central
    cfg, conf = bound_terminal(tmp_path, central, server_key=reg["server_key"])
    assert presensi("-c", cfg, "time", "sync", "--no-push").returncode == 0
    presensi("-c", cfg, "punch", "--employee", "198501012010011001", "--method", "pin")
    _, folder = export(cfg, tmp_path / "usb")
    rec = json.loads((folder / "punches.jsonl").read_text())
    shift = lambda t: timeline.iso(timeline.parse_iso(t) + 3600 * 10**9)  # noqa: E731
    rec.update(utc=shift(rec["utc"]), earliest=shift(rec["earliest"]), latest=shift(rec["latest"]))
    (folder / "punches.jsonl").write_text(json.dumps(rec, sort_keys=True) + "\n")
    resign(folder, conf.state_dir)
    imported = json.loads(presensi("server", "import", tmp_path / "usb", "--db", db, "--json").stdout)
    assert imported["time_mismatches"] == 1
    assert "time-mismatch" in server_rows(db)[1]["flags"]
    assert "contradicts the export's own time samples" in presensi("server", "alarms", "--db", db).stdout


def test_a_format_1_export_without_samples_is_still_imported(central, tmp_path):
    server, url, reg, db = central
    cfg, conf = bound_terminal(tmp_path, central)
    presensi("-c", cfg, "punch", "--employee", "198501012010011001", "--method", "pin")
    _, folder = export(cfg, tmp_path / "usb")
    (folder / "samples.jsonl").unlink()

    def as_v1(m):
        m["format"] = "presensi-export/1"
        del m["files"]["samples.jsonl"]
    resign(folder, conf.state_dir, as_v1)
    imported = json.loads(presensi("server", "import", tmp_path / "usb", "--db", db, "--json").stdout)
    assert imported["stored"] == 1 and imported["samples"] == 0
