"""Offline time sources ([time]): the hardware RTC (a fake sysfs directory that ticks with this machine's
clock, read by the real sysfs parser) and GPS (the real gpsd under gpsfake replaying NMEA in real time).

The truth is this machine's clock, read by the test. A power cut is a clock reading of another boot (the
raw monotonic clock and the boot id are what a reboot changes); everything else is the real thing: the real
SQLite punch log, the real `presensi` commands, the reference central server as a process, gpsd.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import presensi, write_config
from gps_support import GPSFAKE, GpsFake, write_log
from test_time_blackbox import LIBFAKETIME, CentralServer

from drivers.gps import GpsError, read_fix
from drivers.rtc import RtcError, fake
from drivers.rtc.kernel import KernelRtc, _from_struct, _to_struct
from terminal import config as config_mod
from terminal.app import jobs, timesources
from terminal.log import punchlog
from terminal.ops import faults
from terminal.timing import clock, rtc, timeline
from terminal.timing.clock import ClockReading

S = 1_000_000_000


def time_section(rtc_dir: Path | None = None, **keys) -> str:
    values = {"kernel_ntp": False, **({"rtc": "fake", "rtc_path": str(rtc_dir)} if rtc_dir else {}), **keys}
    return "\n[time]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def terminal(tmp: Path, extra: str = "") -> tuple[Path, config_mod.Config]:
    cfg = write_config(tmp / "presensi.toml", tmp / "state", device_id="opd-01", extra=extra)
    assert presensi("init", config=cfg).returncode == 0
    return cfg, config_mod.load(cfg)


def other_boot(boot_id: str = "after-power-cut"):
    """Readings of a boot after a power cut: a new boot id, a wall clock stuck in the past (no NTP)."""
    def read() -> ClockReading:
        r = clock.read()
        return ClockReading(boot_id, r.monoraw_ns, r.boottime_ns, r.realtime_ns - 86400 * S, clock.TIME_ERROR,
                            16_000_000)
    return read


def inside(now: dict, before: int, after: int) -> bool:
    return timeline.parse_iso(now["earliest"]) <= before and after <= timeline.parse_iso(now["latest"])


def open_fault_keys(cfg) -> dict:
    with punchlog.PunchLog(cfg.state_dir) as log:
        return {f["fault_key"]: f for f in faults.open_faults(log.conn)}


# -- the driver ------------------------------------------------------------------------------------------------


def test_sysfs_rtc_is_read_from_since_epoch_or_date_and_time_and_garbage_is_refused(tmp_path):
    d = tmp_path / "rtc0"
    d.mkdir()
    (d / "since_epoch").write_text("1796150000\n")
    assert KernelRtc(str(d), "/nonexistent").read() == 1796150000
    (d / "since_epoch").unlink()
    (d / "date").write_text("2026-12-01\n")
    (d / "time").write_text("20:08:02\n")
    assert KernelRtc(str(d), "/nonexistent").read() == 1796155682
    (d / "since_epoch").write_text("-1\n")
    with pytest.raises(RtcError, match="not a number"):
        KernelRtc(str(d), "/nonexistent").read()
    with pytest.raises(RtcError, match="cannot be opened"):  # no sysfs directory, no device
        KernelRtc(str(tmp_path / "none"), str(tmp_path / "rtc-missing")).read()
    assert _from_struct(_to_struct(1796155682)) == 1796155682


def test_an_rtc_device_that_is_not_an_rtc_cannot_be_set(tmp_path):
    (tmp_path / "rtc0").write_text("")
    with pytest.raises(RtcError, match="RTC_SET_TIME failed"):
        KernelRtc(str(tmp_path / "nodir"), str(tmp_path / "rtc0")).set(1796155682)


# -- the RTC through `presensi time sources` ----------------------------------------------------------------------


def test_an_uncalibrated_rtc_gives_no_sample_and_a_fault_that_says_what_to_do(tmp_path):
    rtc_dir = fake.make(tmp_path / "rtc0")
    cfg, conf = terminal(tmp_path, time_section(rtc_dir))
    out = presensi("time", "sources", "--json", config=cfg)
    assert out.returncode == 1
    result = json.loads(out.stdout)["sources"]["rtc"]
    assert result["code"] == "rtc-uncalibrated" and "trusted" in result["error"]
    assert "time:rtc" in open_fault_keys(conf)
    status = json.loads(presensi("time", "status", "--json", config=cfg).stdout)
    assert status["now"]["basis"] != "rtc" and status["samples_total"] == 0
    assert status["rtc"]["calibration"] is None
    assert "never calibrated" in presensi("time", "status", config=cfg).stdout


@pytest.fixture
def central(tmp_path):
    srv = CentralServer(tmp_path)
    yield srv
    srv.stop()


def central_section(central) -> str:
    return (f'\n[central]\nurl = "{central.url}"\ntoken = "{central.device["token"]}"\n'
            f'enrolment_code = "{central.device["enrolment_code"]}"\n'  # the first signed request binds the key
            f'server_key = "{central.device["server_key"]}"\ntimeout = 5.0\n')


@pytest.mark.parametrize("settable", [True, False], ids=["set", "no-cap-sys-time"])
def test_after_a_signed_sample_the_rtc_is_calibrated_and_anchors_the_boot_after_a_power_cut(
        tmp_path, central, settable):
    rtc_dir = fake.make(tmp_path / "rtc0", offset_s=40.3, settable=settable)  # the chip runs 40 s ahead
    cfg, conf = terminal(tmp_path, central_section(central) + time_section(rtc_dir, rtc_drift_ppm=2.0))
    assert presensi("time", "sync", "--no-push", config=cfg).returncode == 0
    out = presensi("time", "sources", "--json", config=cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)["sources"]["rtc"]
    assert result["action"] == "calibrated" and result["set"] is settable
    chip = fake.FakeRtc(str(rtc_dir), "")
    if settable:  # the chip now reads the true second
        assert abs(chip.read() - time.time()) <= 1.5 and abs(result["offset_s"]) <= 1.0
    else:  # not set: the offset is remembered, and why it was not set is on record
        assert "CAP_SYS_TIME" in result["set_error"] and abs(result["offset_s"] - 40.3) <= 1.0
        assert abs(chip.read() - time.time() - 40.3) <= 1.5
    text = presensi("time", "status", config=cfg).stdout
    assert "calibrated" in text and ("set by the daemon" in text) is settable

    # power cut: a new boot without network, its wall clock a day behind; the RTC anchors it
    with punchlog.PunchLog(conf.state_dir) as log:
        before = time.time_ns()
        got = timesources.read_sources(conf, log.conn, read_clock=other_boot())["rtc"]
        after = time.time_ns()
        assert got["ok"] and got["action"] == "sample" and got["sample"]["status"] == "accepted", got
        now = timeline.now(log.conn, reading=other_boot()())
        t = time.time_ns()
    assert now["basis"] == "rtc" and now["verified"] and inside(now, t, t), now
    assert now["uncertainty_s"] <= 1.2  # a second of resolution each at calibration and now, and 2 ppm
    sample = got["sample"]
    assert abs(timeline.parse_iso(sample["utc"]) - (before + after) // 2) <= sample["uncertainty_ns"]


def calibrated_terminal(tmp_path, central, **rtc_keys):
    rtc_dir = fake.make(tmp_path / "rtc0")
    cfg, conf = terminal(tmp_path, central_section(central) + time_section(rtc_dir, **rtc_keys))
    assert presensi("time", "sync", "--no-push", config=cfg).returncode == 0
    assert json.loads(presensi("time", "sources", "--json", config=cfg).stdout)["sources"]["rtc"]["ok"]
    return rtc_dir, cfg, conf


def test_a_dead_rtc_battery_2000_01_01_is_refused_with_a_fault_and_adds_no_sample(tmp_path, central):
    rtc_dir, cfg, conf = calibrated_terminal(tmp_path, central)
    fake.make(rtc_dir, reads=fake.DEAD_BATTERY_EPOCH)  # power cut with a flat battery
    with punchlog.PunchLog(conf.state_dir) as log:
        got = timesources.read_sources(conf, log.conn, read_clock=other_boot())["rtc"]
        assert got["code"] == "rtc-lost-time" and "battery" in got["error"]
        assert not timeline.samples(log.conn, boot_id="after-power-cut")
        assert not timeline.now(log.conn, reading=other_boot()())["verified"]
    assert "battery" in open_fault_keys(conf)["time:rtc"]["message"]
    fake.make(rtc_dir)  # battery replaced and the time restored: the fault clears
    with punchlog.PunchLog(conf.state_dir) as log:
        assert timesources.read_sources(conf, log.conn, read_clock=other_boot())["rtc"]["ok"]
    assert "time:rtc" not in open_fault_keys(conf)


def test_an_rtc_set_back_behind_the_last_trusted_time_is_refused(tmp_path, central):
    rtc_dir, cfg, conf = calibrated_terminal(tmp_path, central)
    fake.make(rtc_dir, offset_s=-3 * 3600)  # someone set the chip 3 h back (as a wrong `hwclock -w` would)
    with punchlog.PunchLog(conf.state_dir) as log:
        got = timesources.read_sources(conf, log.conn, read_clock=other_boot())["rtc"]
    assert got["code"] in ("rtc-went-back", "rtc-behind"), got
    assert "time:rtc" in open_fault_keys(conf)


def test_zk_settime_and_adms_claims_never_calibrate_the_rtc(tmp_path):
    rtc_dir = fake.make(tmp_path / "rtc0", offset_s=90)
    cfg, conf = terminal(tmp_path, time_section(rtc_dir))
    with punchlog.PunchLog(conf.state_dir) as log:
        for source in ("zk-settime", "adms-datetime", "http-date", "manual"):  # none of them is trusted here
            r = clock.read()
            timeline.record_sample(log.conn, source=source, reading=r, utc_ns=r.realtime_ns + 90 * S,
                                   uncertainty_ns=S)
        got = timesources.read_sources(conf, log.conn)["rtc"]
    assert got["code"] == "rtc-uncalibrated" and rtc.load(conf.state_dir) is None
    assert set(timesources.SOURCES) == {"kernel-ntp", "gps", "rtc"}


def test_the_daemon_job_reads_the_sources(tmp_path):
    rtc_dir = fake.make(tmp_path / "rtc0")
    cfg, conf = terminal(tmp_path, time_section(rtc_dir))
    assert "time_sources" in jobs.JOBS and "time_sources" in jobs.STARTUP_JOBS
    result = jobs.time_sources(jobs.JobContext(conf))
    assert result["rtc"]["code"] == "rtc-uncalibrated"


# -- GPS through gpsd --------------------------------------------------------------------------------------------

needs_gpsfake = pytest.mark.skipif(GPSFAKE is None, reason="gpsfake is not installed (Debian packages gpsd and "
                                                          "gpsd-clients; scripts/test.sh installs them)")


@pytest.fixture
def gpsfake(tmp_path):
    started = []

    def start(valid: bool = True, seconds: int = 90) -> GpsFake:
        first = int(time.time()) + 2
        log_path = tmp_path / "replay.nmea"
        stamps = write_log(log_path, first, seconds, valid=valid)
        g = GpsFake(log_path, stamps)
        started.append(g)
        g.wait_listening()
        return g

    yield start
    for g in started:
        g.stop()


@needs_gpsfake
def test_gpsfake_replay_time_status_shows_the_gps_basis_with_the_true_time_inside(tmp_path, gpsfake):
    g = gpsfake()
    cfg, conf = terminal(tmp_path, time_section(gps="gpsd", gpsd_port=g.port, gps_timeout=15.0))
    env = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "-3h", "FAKETIME_DONT_FAKE_MONOTONIC": "1"} if (
        LIBFAKETIME and shutil.which("faketime")) else None  # the wall clock 3 h wrong: GPS does not care
    out = presensi("time", "sources", "--json", config=cfg, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["sources"]["gps"]["mode"] >= 2
    before = time.time_ns()
    status = json.loads(presensi("time", "status", "--json", config=cfg, env=env).stdout)
    after = time.time_ns()
    now = status["now"]
    assert now["basis"] == "gps" and now["verified"] and status["recent_samples"][0]["source"] == "gps"
    assert timeline.parse_iso(now["earliest"]) <= after and before <= timeline.parse_iso(now["latest"]), now
    assert now["uncertainty_s"] <= 0.6
    text = presensi("time", "status", config=cfg, env=env).stdout
    assert "basis gps" in text and "time verified" in text


@needs_gpsfake
def test_a_receiver_without_fix_gives_no_sample_and_a_gps_fault(tmp_path, gpsfake):
    g = gpsfake(valid=False)
    cfg, conf = terminal(tmp_path, time_section(gps="gpsd", gpsd_port=g.port, gps_timeout=4.0))
    out = presensi("time", "sources", "--json", config=cfg)
    assert out.returncode == 1
    assert "no GPS fix" in json.loads(out.stdout)["sources"]["gps"]["error"]
    assert "antenna" in open_fault_keys(conf)["time:gps"]["message"]
    assert json.loads(presensi("time", "status", "--json", config=cfg).stdout)["samples_total"] == 0


def hostile_gpsd(script) -> tuple[int, threading.Event]:
    """A TCP server on 127.0.0.1 that runs `script(conn)` for each client: what a fake gpsd would send."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    done = threading.Event()

    def serve():
        with srv:
            srv.settimeout(30)
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                try:
                    script(conn)
                except OSError:
                    pass
                done.wait(30)
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], done


@pytest.mark.parametrize("attack", ["endless-line", "silent", "not-gpsd", "tpv-without-fix", "tpv-junk-time"])
def test_a_hostile_or_broken_gpsd_cannot_hang_the_reader_or_feed_a_sample(tmp_path, attack):
    version = b'{"class":"VERSION","release":"3.22","proto_major":3,"proto_minor":14}\n'
    scripts = {
        "endless-line": lambda c: [c.sendall(b"x" * 65536) for _ in range(4)],
        "silent": lambda c: None,
        "not-gpsd": lambda c: c.sendall(b"HTTP/1.1 200 OK\r\n\r\n"),
        "tpv-without-fix": lambda c: (c.sendall(version), [c.sendall(
            b'{"class":"TPV","mode":1,"time":"2026-12-01T20:00:00.000Z"}\n') for _ in range(3)]),
        "tpv-junk-time": lambda c: (c.sendall(version), c.sendall(b'{"class":"TPV","mode":3,"time":"junk"}\n')),
    }
    port, done = hostile_gpsd(scripts[attack])
    cfg, conf = terminal(tmp_path, time_section(gps="gpsd", gpsd_port=port, gps_timeout=2.0))
    t0 = time.monotonic()
    with punchlog.PunchLog(conf.state_dir) as log:
        got = timesources.read_sources(conf, log.conn)["gps"]
        stored = timeline.samples(log.conn)
    done.set()
    assert not got["ok"] and time.monotonic() - t0 < 10
    assert stored == [] and "time:gps" in open_fault_keys(conf)


def test_the_gps_reader_refuses_an_unreachable_gpsd_quickly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GpsError, match="not reachable"):
        read_fix("127.0.0.1", port, 2.0, time.time)


def test_a_calibration_under_a_synchronised_kernel_also_covers_the_kernel_writing_the_rtc():
    """chrony's rtcsync lets the kernel write the system time into the RTC every 11 minutes; a daemon without
    CAP_SYS_TIME measured the chip 40 s ahead just before. After a power cut the chip may read either way:
    both must lie inside the RTC sample's interval."""
    t = 1_796_000_000 * S  # the truth at the calibration
    trusted = {"lo_ns": t - 5_000_000, "hi_ns": t + 5_000_000, "source": "kernel-ntp", "sample_id": 1}
    cal = rtc.calibrate(t // S + 40, trusted, trusted, boot_id="b", set_rtc=False, set_error="no CAP_SYS_TIME",
                        kernel_maxerror_ns=20_000_000)
    later = t + 6 * 3600 * S  # a power cut six hours on
    for chip_reads in (later // S + 40, later // S):  # still 40 s ahead, or written by the kernel meanwhile
        lo, hi = rtc.interval(chip_reads, cal, 2.0)
        assert lo <= later <= hi
    plain = rtc.calibrate(t // S + 40, trusted, trusted, boot_id="b", set_rtc=False, set_error=None)
    assert not plain.kernel_may_write and rtc.interval(later // S + 40, plain, 2.0)[1] - \
        rtc.interval(later // S + 40, plain, 2.0)[0] < 3 * S  # without a synchronised kernel: tight


@needs_gpsfake
def test_the_daemon_reads_gps_at_start_and_sets_the_rtc_from_it(tmp_path, gpsfake):
    """`presensi run`: the time_sources job runs right at start; the GPS fix is a trusted sample, so the same
    run calibrates the RTC and sets the chip (it was 25 s ahead)."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO

    g = gpsfake(seconds=120)
    rtc_dir = fake.make(tmp_path / "rtc0", offset_s=25.0)
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state", device_id="opd-01", extra=(
        '\n[camera]\nenabled = false\n[web]\nlisten = "127.0.0.1:0"\n'
        + time_section(rtc_dir, gps="gpsd", gpsd_port=g.port, gps_timeout=15.0)))
    assert presensi("init", config=cfg).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "-c", str(cfg), "run"], cwd=REPO,
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            status = json.loads(presensi("time", "status", "--json", config=cfg).stdout)
            if status["rtc"]["calibration"] is not None:
                break
            time.sleep(0.5)
        assert status["rtc"]["calibration"] is not None, status
        assert status["now"]["basis"] == "gps" and status["rtc"]["calibration"]["source"] == "gps"
        assert status["rtc"]["calibration"]["set_rtc"] is True
        assert abs(fake.FakeRtc(str(rtc_dir), "").read() - time.time()) <= 1.5
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_a_gpsd_elsewhere_on_the_lan_is_refused_by_the_configuration(tmp_path):
    """gpsd's protocol is unauthenticated: anyone who can answer on a LAN address could set the terminal's
    time (and its RTC) through a fake fix. `presensi config check` names the key and the reason."""
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state",
                       extra=time_section(gps="gpsd", gpsd_host="192.168.1.50"))
    out = presensi("config", "check", config=cfg)
    assert out.returncode != 0 and "[time] gpsd_host" in out.stderr and "unauthenticated" in out.stderr
    for ok in ("127.0.0.1", "localhost", "::1"):
        assert config_mod.from_dict({"device": {"id": "x"}, "paths": {"state_dir": "/tmp/x"},
                                     "time": {"gpsd_host": ok}}).time.gpsd_host == ok


def synced_kernel():
    """Readings of this boot while the kernel says it is NTP-synchronised (maxerror 20 ms), wall clock true."""
    def read() -> ClockReading:
        r = clock.read()
        return ClockReading(r.boot_id, r.monoraw_ns, r.boottime_ns, r.realtime_ns, 0, 20_000)
    return read


@pytest.mark.parametrize("settable", [True, False], ids=["set", "no-cap-sys-time"])
def test_under_a_synchronised_kernel_the_rtc_is_set_or_its_sample_covers_the_kernel_writing_it(tmp_path, settable):
    rtc_dir = fake.make(tmp_path / "rtc0", offset_s=40.0, settable=settable)
    cfg, conf = terminal(tmp_path, time_section(rtc_dir, kernel_ntp=True, rtc_drift_ppm=2.0))
    with punchlog.PunchLog(conf.state_dir) as log:
        got = timesources.read_sources(conf, log.conn, read_clock=synced_kernel())
        assert got["kernel-ntp"]["sample"]["source"] == "kernel-ntp"
        result = got["rtc"]
        assert result["action"] == "calibrated" and result["set"] is settable and result["calibration"][
            "kernel_may_write"]
        assert abs(result["offset_s"] - (0 if settable else 40)) <= 1.0
        if not settable:
            fake.make(rtc_dir, offset_s=0.0)  # chrony's rtcsync: the kernel wrote the system time into the chip
        t0 = time.time_ns()
        sample = timesources.read_sources(conf, log.conn, read_clock=other_boot())["rtc"]["sample"]
        t1 = time.time_ns()
    lo = timeline.parse_iso(sample["utc"]) - sample["uncertainty_ns"]
    hi = timeline.parse_iso(sample["utc"]) + sample["uncertainty_ns"]
    assert lo <= t0 and t1 <= hi, (sample, t0, t1)
