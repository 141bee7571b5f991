"""Black-box: a terminal whose wall clock is 3 hours wrong (libfaketime, monotonic clocks left true) records
punches with `presensi punch`, then syncs with the reference central server (`presensi server run`), which
ends up storing each punch's UTC within ±2 s of the truth. Every part is a real process; the truth is this
machine's clock (the server's), read by the test around each punch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, presensi, readline, write_config

S = 1_000_000_000
FAKE_3H_BEHIND = {"FAKETIME": "-3h", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _libfaketime() -> str | None:
    for d in ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime", "/usr/lib/faketime"):
        lib = Path(d) / "libfaketime.so.1"
        if lib.exists():
            return str(lib)
    return None


LIBFAKETIME = _libfaketime()
pytestmark = pytest.mark.skipif(LIBFAKETIME is None or shutil.which("faketime") is None,
                                reason="libfaketime is not installed (Debian package faketime; scripts/test.sh "
                                       "installs it)")


def faked(extra: dict | None = None) -> dict:
    return {"LD_PRELOAD": LIBFAKETIME, **FAKE_3H_BEHIND, **(extra or {})}


class CentralServer:
    def __init__(self, tmp: Path):
        self.db = tmp / "central.db"
        dev = presensi("server", "add-device", "opd-01", "--db", str(self.db), "--json")
        assert dev.returncode == 0, dev.stderr
        self.device = json.loads(dev.stdout)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "terminal.cli", "server", "run", "--db", str(self.db), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        line = readline(self.proc.stdout, 60)  # "listening on http://HOST:PORT" once ready
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"the central server did not start: {line!r} {self.proc.communicate(timeout=10)[1]}")
        self.url = line.split()[-1]

    def punches(self) -> list[dict]:
        out = presensi("server", "punches", "--db", str(self.db), "--json")
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def central(tmp_path):
    srv = CentralServer(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def terminal_config(tmp_path, central):
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state", device_id="opd-01", extra=(
        f'\n[central]\nurl = "{central.url}"\ntoken = "{central.device["token"]}"\n'
        f'server_key = "{central.device["server_key"]}"\ntimeout = 5.0\n'))
    assert presensi("init", config=cfg, env=faked()).returncode == 0
    return cfg


def punch_under_faketime(cfg: Path, employee: str) -> tuple[dict, int, int]:
    before = time.time_ns()
    out = presensi("punch", "--employee", employee, "--method", "pin", "--json", config=cfg, env=faked())
    after = time.time_ns()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), before, after


def _ns(text: str) -> int:
    from terminal.timing.timeline import parse_iso

    return parse_iso(text)


def test_wrong_wall_clock_punches_reach_the_server_with_utc_within_2_seconds(terminal_config, central):
    cfg = terminal_config
    punches = []
    for i in range(3):
        punches.append(punch_under_faketime(cfg, f"emp{i}"))
        time.sleep(0.5)
    for rec, before, _ in punches:  # the terminal really saw a wall clock 3 h behind, and true raw clocks
        assert abs(rec["realtime_ns"] - (before - 3 * 3600 * S)) < 30 * S
    status = json.loads(presensi("time", "status", "--json", config=cfg, env=faked()).stdout)
    if not status["kernel"]["synced"]:  # (libfaketime does not fake adjtimex: a synchronised host says so)
        assert status["now"]["state"] == "unverified" and status["now"]["earliest"] is None

    # first the punches go out unanchored (no sample yet this boot) ...
    pushed = presensi("sync", "now", "--timeout", "60", config=cfg, env=faked())
    assert pushed.returncode == 0, pushed.stderr
    stored = {p["seq"]: p for p in central.punches()}
    assert len(stored) == 3 and all(p["earliest"] is None for p in stored.values())

    # ... then a signed time sample re-anchors them and the re-anchored times reach the server
    synced = presensi("time", "sync", "--json", config=cfg, env=faked())
    assert synced.returncode == 0, synced.stderr
    result = json.loads(synced.stdout)
    assert result["method"] == "server-signed" and result["punch_times_sent"] == 3
    assert abs(result["now"]["wall_clock_error_s"] + 3 * 3600) < 30
    stored = {p["seq"]: p for p in central.punches()}
    for rec, before, after in punches:
        row = stored[rec["seq"]]
        assert row["basis"] == "server-signed" and "wall-clock-off" in row["flags"]
        utc = _ns(row["utc"])
        assert before - 2 * S <= utc <= after + 2 * S, (row, before, after)
        assert _ns(row["earliest"]) <= after and _ns(row["latest"]) >= before  # the truth is inside

    # a punch after the sample goes out already anchored
    rec, before, after = punch_under_faketime(cfg, "emp9")
    assert presensi("sync", "now", "--timeout", "60", config=cfg, env=faked()).returncode == 0
    row = {p["seq"]: p for p in central.punches()}[rec["seq"]]
    assert before - 2 * S <= _ns(row["utc"]) <= after + 2 * S and row["basis"] == "server-signed"
    text = presensi("time", "status", config=cfg, env=faked()).stdout
    assert "time verified" in text and "off by -108" in text


def test_wall_clock_in_1970_still_records_punches_in_the_not_verified_state(terminal_config):
    env = faked({"FAKETIME": "@1970-01-01 00:00:00"})
    out = presensi("punch", "--employee", "emp1", "--method", "pin", "--json", config=terminal_config, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["realtime_ns"] < 3600 * S
    status = json.loads(presensi("time", "status", "--json", config=terminal_config, env=env).stdout)
    assert status["now"]["state"] == "implausible" and status["now"]["verified"] is False
    assert status["ok"] is False
    overall = json.loads(presensi("status", "--json", config=terminal_config, env=env).stdout)
    assert "time not verified" in overall["time"]["summary"]


def test_time_sync_with_a_wrong_pinned_key_fails_clearly_and_records_nothing(tmp_path, central):
    cfg = write_config(tmp_path / "bad.toml", tmp_path / "state2", device_id="opd-01", extra=(
        f'\n[central]\nurl = "{central.url}"\ntoken = "{central.device["token"]}"\n'
        'server_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="\n'))
    assert presensi("init", config=cfg).returncode == 0
    out = presensi("time", "sync", config=cfg)
    assert out.returncode == 1 and "server_key" in out.stderr and "Traceback" not in out.stderr
    status = json.loads(presensi("time", "status", "--json", config=cfg).stdout)
    assert status["samples_total"] == 0


def test_faketime_library_fakes_only_the_wall_clock():
    code = ("import time, json; print(json.dumps([time.time_ns(), time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)]))")
    real_wall, real_raw = time.time_ns(), time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **faked()})
    wall, raw = json.loads(out.stdout)
    assert abs(wall - (real_wall - 3 * 3600 * S)) < 10 * S
    assert 0 <= raw - real_raw < 10 * S
