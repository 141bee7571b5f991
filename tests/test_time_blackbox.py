"""Black-box: a terminal whose wall clock is 3 hours wrong (libfaketime, monotonic clocks left true) records
punches with `presensi punch`, then syncs with the reference central server (`presensi server run`), which
ends up storing each punch's UTC within ±2 s of the truth. Every part is a real process; the truth is this
machine's clock (the server's), read by the test around each punch."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, presensi, readline, wait_for, write_config

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
        f'enrolment_code = "{central.device["enrolment_code"]}"\n'
        f'server_key = "{central.device["server_key"]}"\ntimeout = 5.0\n'))
    assert presensi("init", config=cfg, env=faked()).returncode == 0
    return cfg


def _ns(text: str) -> int:
    from terminal.timing.timeline import parse_iso

    return parse_iso(text)


WIB = dt.timezone(dt.timedelta(hours=7))


def schedule_splitting(true_utc: dt.datetime, offset: dt.timedelta) -> tuple[str, dict]:
    """A [schedule] whose masuk window holds the true local time and whose pulang window holds the wrong
    clock's (3 h away, so the windows never overlap), every day a workday, no holidays. Returns the TOML and
    the windows' due times."""
    def window(center: dt.datetime, due_offset: dt.timedelta) -> tuple[str, dt.time]:
        day = center.replace(hour=0, minute=0, second=0, microsecond=0)
        opens = max(day, center - dt.timedelta(minutes=40))
        closes = min(day + dt.timedelta(hours=23, minutes=59), center + dt.timedelta(minutes=40))
        due = min(max(opens, center + due_offset), closes)
        return f"{opens:%H:%M}-{due:%H:%M}-{closes:%H:%M}", due.time()

    true_local = true_utc.astimezone(WIB)
    masuk, masuk_due = window(true_local, -dt.timedelta(minutes=10))  # the true punch is ~10 min late
    pulang, _ = window(true_local + offset, dt.timedelta(minutes=20))
    toml = (f'\n[schedule]\nworkdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\nholidays = []\n'
            f'default = {{ masuk = "{masuk}", pulang = "{pulang}" }}\n')
    return toml, {"masuk_due": masuk_due}


DIRECTIONS = {"3h-slow": ("-3h", -3), "3h-fast": ("+3h", 3)}


def wrong_clock(direction: str) -> dict:
    return faked({"FAKETIME": DIRECTIONS[direction][0]})


def make_terminal(tmp: Path, url: str, device: dict, direction: str, extra: str = "") -> tuple[Path, dict]:
    hours = DIRECTIONS[direction][1]
    sched, dues = schedule_splitting(dt.datetime.now(dt.UTC), dt.timedelta(hours=hours))
    cfg = write_config(tmp / "presensi.toml", tmp / "state", device_id="opd-01", extra=(
        f'\n[central]\nurl = "{url}"\ntoken = "{device["token"]}"\n'
        f'enrolment_code = "{device["enrolment_code"]}"\n'  # the first signed request binds this terminal's key
        f'server_key = "{device["server_key"]}"\ntimeout = 5.0\n{extra}{sched}'))
    assert presensi("init", config=cfg, env=wrong_clock(direction)).returncode == 0
    return cfg, dues


def punch_with_wrong_clock(cfg: Path, employee: str, direction: str) -> tuple[dict, int, int]:
    before = time.time_ns()
    out = presensi("punch", "--employee", employee, "--method", "pin", "--json", config=cfg,
                   env=wrong_clock(direction))
    after = time.time_ns()
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    hours = DIRECTIONS[direction][1]
    assert abs(rec["realtime_ns"] - (before + hours * 3600 * S)) < 30 * S  # the terminal's clock was wrong
    # at the punch there is no sample: the kind is the wrong clock's, and the terminal says it is unverified
    assert rec["kind"] == "pulang" and rec["time_verified"] is False and rec["derived"]["kind"] == "pulang"
    assert rec["details"] == {"operator": "cli"}  # what the hash holds: no kind, no lateness
    return rec, before, after


def assert_true_time_and_kind(row: dict, before: int, after: int, dues: dict) -> None:
    """The server's row: UTC within ±2 s of the truth, and the kind and lateness of the true local time."""
    utc = _ns(row["utc"])
    assert before - 2 * S <= utc <= after + 2 * S, (row, before, after)
    assert row["basis"] == "server-signed"
    derived = row["derived"]
    assert row["kind"] == derived["kind"] == "masuk" and row["recorded_kind"] == ""
    assert derived["basis"] == "server-signed" and derived["time_verified"] is True
    local = dt.datetime.fromtimestamp(utc / S, WIB)
    assert derived["local_date"] == local.date().isoformat()
    assert derived["local_time"][:5] in {local.strftime("%H:%M"), (local - dt.timedelta(seconds=1)).strftime("%H:%M")}
    due = local.replace(hour=dues["masuk_due"].hour, minute=dues["masuk_due"].minute, second=0, microsecond=0)
    late = int((local - due).total_seconds() // 60)
    assert derived["minutes_late"] in {max(0, late), max(0, late - 1)}, (derived, late)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_sync_now_alone_delivers_the_true_utc_and_the_kind_of_the_true_local_time(tmp_path, central, direction):
    cfg, dues = make_terminal(tmp_path, central.url, central.device, direction)
    punches = []
    for i in range(3):
        punches.append(punch_with_wrong_clock(cfg, f"emp{i}", direction))
    status = json.loads(presensi("time", "status", "--json", config=cfg, env=wrong_clock(direction)).stdout)
    if not status["kernel"]["synced"]:  # (libfaketime does not fake adjtimex: a synchronised host says so)
        assert status["now"]["state"] == "unverified" and status["now"]["earliest"] is None

    # `presensi sync now` alone: it takes the server's signed time first, then delivers
    pushed = presensi("sync", "now", "--timeout", "60", "--json", config=cfg, env=wrong_clock(direction))
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["time_sample"] == {"ok": True, "method": "server-signed"}
    stored = {p["seq"]: p for p in central.punches()}
    assert len(stored) == 3
    for rec, before, after in punches:
        assert_true_time_and_kind(stored[rec["seq"]], before, after, dues)
    assert presensi("server", "alarms", "--db", str(central.db)).stdout.strip() == "no alarms"  # chain intact
    verify = presensi("log", "verify", config=cfg, env=wrong_clock(direction))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # on the terminal too, the kind now follows the corrected time (the hashed record is unchanged)
    listed = json.loads(presensi("log", "list", "--json", config=cfg, env=wrong_clock(direction)).stdout)
    assert [r["derived"]["kind"] for r in listed] == ["masuk"] * 3 and {r["kind"] for r in listed} == {""}

    # a punch after the sample is decided on the corrected time at once
    out = presensi("punch", "--employee", "emp9", "--method", "pin", "--json", config=cfg, env=wrong_clock(direction))
    rec = json.loads(out.stdout)
    assert rec["kind"] == "masuk" and rec["time_verified"] is True
    text = presensi("time", "status", config=cfg, env=wrong_clock(direction)).stdout
    off = re.search(r"off by ([-+]\d+\.\d+) s", text)
    assert "time verified" in text and off and abs(float(off.group(1)) - DIRECTIONS[direction][1] * 3600) < 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PUSH_INTERVAL = 4.0
SLACK_S = 8.0  # the delivery itself, on a loaded 2-core machine


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_the_daemon_delivers_true_times_and_kinds_within_one_push_interval_of_the_server_returning(
        tmp_path, direction):
    db = tmp_path / "central.db"
    device = json.loads(presensi("server", "add-device", "opd-01", "--db", str(db), "--json").stdout)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cfg, dues = make_terminal(tmp_path, url, device, direction, extra=(
        f"push_interval = {PUSH_INTERVAL}\nretry_base = 0.2\nmax_backoff = 1.0\n"
        '[web]\nlisten = "127.0.0.1:0"\n[camera]\nenabled = false\n'))
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "terminal.cli", "-c", str(cfg), "run"], stdout=log,
                              stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **wrong_clock(direction)})
    server = None
    try:
        punches = [punch_with_wrong_clock(cfg, f"emp{i}", direction) for i in range(2)]
        # the daemon tries, and fails, to reach the server (its time sample and its push)
        wait_for(lambda: "cannot reach" in (tmp_path / "daemon.log").read_text() or daemon.poll() is not None, 60,
              "the daemon to find the central server unreachable")
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
        server_log = open(tmp_path / "server.log", "w")  # a file: a full pipe would block the server
        server = subprocess.Popen([sys.executable, "-m", "terminal.cli", "server", "run", "--db", str(db),
                                   "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                                  stderr=server_log, text=True, cwd=REPO)
        assert server.stdout.readline().startswith("listening on ")
        reachable = time.monotonic()

        def delivered():
            out = presensi("server", "punches", "--db", str(db), "--json")
            rows = {r["seq"]: r for r in (json.loads(x) for x in out.stdout.splitlines() if x.strip())}
            ok = all(r["seq"] in rows and (rows[r["seq"]].get("derived") or {}).get("kind") == "masuk"
                     and rows[r["seq"]]["basis"] == "server-signed" for r, _, _ in punches)
            return rows if ok else None

        try:
            rows = wait_for(delivered, 120, "the true times and kinds on the server")
        except AssertionError:
            daemon.send_signal(signal.SIGUSR1)  # every thread's stack into the daemon's log, for the report
            time.sleep(1)
            raise AssertionError((tmp_path / "daemon.log").read_text()[-6000:]) from None
        elapsed = time.monotonic() - reachable
        print(json.dumps({"direction": direction, "seconds_after_server_reachable": round(elapsed, 2),
                          "push_interval": PUSH_INTERVAL}))
        assert elapsed <= PUSH_INTERVAL + SLACK_S, elapsed
        for rec, before, after in punches:
            assert_true_time_and_kind(rows[rec["seq"]], before, after, dues)
    finally:
        daemon.terminate()
        daemon.wait(30)
        if server is not None:
            server.terminate()
            server.wait(10)
        log.close()


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
        f'enrolment_code = "{central.device["enrolment_code"]}"\n'
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


SCHEDULER_PROBE = """
import sys, threading, time
from terminal.app.scheduler import MonotonicScheduler
s = MonotonicScheduler()
s.add("probe", lambda: print("run", time.time_ns(), flush=True), 0.5, first_delay=0.0)
s.start()
threading.Event().wait(120)
"""


def test_periodic_jobs_keep_running_across_a_backward_wall_clock_step(tmp_path):
    """The daemon's jobs wait on the monotonic clock: the wall clock stepping back an hour (a Pi that
    booted in the past being corrected, or the reverse) neither stops nor delays them. (apscheduler 3's
    interval trigger, used before, ran nothing for the hour after such a step.)"""
    stamp = tmp_path / "faketime"
    stamp.write_text("+0\n")
    env = {**os.environ, "LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(stamp), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    env.pop("FAKETIME", None)
    proc = subprocess.Popen([sys.executable, "-c", SCHEDULER_PROBE], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        def runs(n: int) -> list[int]:
            out = []
            while len(out) < n:
                try:
                    out.append(int(lines.get(timeout=30).split()[1]))
                except queue.Empty:
                    raise AssertionError("no job ran for 30 s after the wall clock stepped back") from None
            return out

        before = runs(2)
        stamp.write_text("-1h\n")  # the wall clock steps back an hour
        started = time.monotonic()
        after = []
        while not after or after[-1] > before[-1] - 1800 * S:  # a run that saw the stepped clock
            after = runs(1)
        after += runs(3)
        assert all(t < before[-1] - 1800 * S for t in after)  # they did run on the stepped-back clock
        assert time.monotonic() - started < 30  # 4 runs at 0.5 s: seconds, not the hour of the step
    finally:
        proc.kill()
        proc.wait(10)
