"""The punch service every method goes through: kind from the schedule, repeats, feedback after commit."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import presensi, presensi_json, write_config

from terminal import config
from terminal.log import punchlog
from terminal.punch import derived, roster
from terminal.punch.service import PunchService


@pytest.fixture
def service(tmp_path):
    cfg = config.from_dict({"device": {"id": "t", "timezone": "Asia/Makassar"},
                            "paths": {"state_dir": str(tmp_path / "state")}})
    punchlog.init(cfg.state_dir)
    log = punchlog.PunchLog(cfg.state_dir)
    seen = []
    svc = PunchService(cfg, log, feedback=[lambda outcome: seen.append((outcome, log.count()))])
    yield cfg, svc, seen
    log.close()


def test_feedback_comes_after_the_commit_and_repeats_are_not_recorded(service):
    cfg, svc, seen = service
    first = svc.punch("1001", "pin")
    assert first.recorded and first.record["seq"] == 1
    assert seen[0][1] == 1, "feedback ran before the punch was committed"
    again = svc.punch("1001", "pin")
    assert again.acknowledged and not again.recorded
    assert again.record["seq"] == 1 and again.message.startswith("Sudah tercatat")
    assert svc.log.count() == 1


def test_a_holiday_from_a_new_roster_applies_after_reload(service):
    cfg, svc, _ = service
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()  # WITA
    roster.install(cfg.state_dir, version=1, employees=[{"id": "2002", "name": "Budi Santoso", "uid": 2002,
                                                            "pin_allowed": True}],
                   holidays=[{"date": today, "name": "Libur Daerah"}])
    svc.reload_schedule()
    outcome = svc.punch("2002", "pin")
    assert outcome.recorded
    assert outcome.decision["workday"] is False
    assert outcome.decision["day_name"] == "Libur Daerah"


# --- who may punch: the roster and pin_allowed, for every method and every way in (issue 16) -------------------

BUDI, SITI, OUTSIDER = "198501012010011001", "199001012015012002", "197001011990011099"


def install_roster(state_dir) -> None:
    roster.install(state_dir, version=1, employees=[
        {"id": BUDI, "name": "Budi Santoso", "uid": 1, "pin_allowed": True},
        {"id": SITI, "name": "Siti Aminah", "uid": 2, "pin_allowed": False}])


@pytest.fixture
def cli_terminal(tmp_path):
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state")
    assert presensi("init", config=cfg).returncode == 0
    install_roster(tmp_path / "state")
    return cfg, tmp_path / "state"


def test_presensi_punch_refuses_an_employee_outside_the_roster_and_one_without_pin(cli_terminal):
    cfg, state = cli_terminal
    outsider = presensi("punch", "--employee", OUTSIDER, "--method", "pin", config=cfg)
    assert outsider.returncode != 0
    assert "not in the installed roster" in outsider.stderr and "NOT recorded" in outsider.stderr
    siti = presensi("punch", "--employee", SITI, "--method", "pin", config=cfg)
    assert siti.returncode != 0 and "pin_allowed" in siti.stderr and "--override-reason" in siti.stderr
    budi = presensi("punch", "--employee", BUDI, "--method", "pin", "--json", config=cfg)
    assert budi.returncode == 0, budi.stderr
    with punchlog.PunchLog(state) as log:
        assert [r["employee"] for r in log.records()] == [BUDI]


def test_an_operator_override_is_recorded_in_the_punch_and_the_audit_table(cli_terminal):
    cfg, state = cli_terminal
    empty = presensi("punch", "--employee", SITI, "--method", "pin", "--override-reason", "  ", config=cfg)
    assert empty.returncode != 0 and "override-reason" in empty.stderr
    reason = "sensor jari rusak, dikonfirmasi kepala bagian"
    result = presensi_json("punch", "--employee", SITI, "--method", "pin", "--override-reason", reason,
                           config=cfg)
    assert result["recorded"] is True
    override = result["details"]["override"]
    assert override["reason"] == reason and override["operator"].startswith("cli:")
    assert "pin_allowed" in override["refused_because"]
    with punchlog.PunchLog(state) as log:
        assert log.verify() == []  # the override is inside the hash chain
        audit = [a for a in log.audit_entries() if a["action"] == "punch-override"]
    assert len(audit) == 1 and audit[0]["details"]["reason"] == reason
    assert audit[0]["details"]["seq"] == result["seq"] and audit[0]["actor"] == override["operator"]


@pytest.mark.parametrize("method", ["face", "finger", "pin"])
def test_every_method_through_the_service_refuses_an_employee_outside_the_roster(service, method):
    cfg, svc, seen = service
    install_roster(cfg.state_dir)
    outcome = svc.punch(OUTSIDER, method)
    assert outcome.refused and not outcome.acknowledged and not outcome.recorded
    assert outcome.message == f"Ditolak: NIP {OUTSIDER} tidak ada di daftar pegawai terminal ini"
    assert seen and seen[-1][0] is outcome, "the screen and buzzer got no answer"
    assert svc.log.count() == 0
    assert svc.punch(BUDI, method).recorded


def test_pin_allowed_binds_only_pin_punches(service):
    cfg, svc, _ = service
    install_roster(cfg.state_dir)
    refused = svc.punch(SITI, "pin")
    assert refused.refused and "tidak diizinkan presensi dengan PIN" in refused.message
    assert svc.punch(SITI, "finger").recorded  # her finger is hers; PIN is what an operator types


def test_without_any_roster_installed_every_employee_may_punch_as_before(service):
    """A terminal set up with `presensi enroll-photos` alone has roster version 0: nobody to check against."""
    _, svc, _ = service
    assert svc.punch(OUTSIDER, "pin").recorded and svc.punch(BUDI, "face").recorded


def test_a_damaged_roster_refuses_until_an_operator_overrides(service):
    cfg, svc, _ = service
    install_roster(cfg.state_dir)
    path = roster.db_path(cfg.state_dir)
    path.write_bytes(b"not a database" * 100)
    outcome = svc.punch(BUDI, "face")
    assert outcome.refused and "daftar pegawai terminal ini rusak" in outcome.message
    forced = svc.punch(BUDI, "pin", override_reason="roster rusak, diperiksa operator", operator="admin")
    assert forced.recorded and forced.record["details"]["override"]["operator"] == "admin"


# --- no fail-open: a broken time service flags the punch and raises a fault (issue 16) ----------------------------

def poison_the_time_service(state_dir, employee: str) -> None:
    """A punch of an earlier boot, and a damaged time sample of that boot (a value that is not a number):
    every fit, and so every corrected time, now raises inside terminal.timing."""
    from terminal.timing import clock

    with punchlog.PunchLog(state_dir) as log:
        now = clock.read()
        earlier = clock.ClockReading("0" * 8 + "-dead-boot", 10**9, 10**9, now.realtime_ns - 3 * 86400 * 10**9,
                                     now.timex_status, now.maxerror_us)
        log.append(employee, "pin", kind="masuk", reading=earlier)
        log.conn.execute("INSERT INTO time_samples (source, boot_id, monoraw_ns, realtime_ns, utc_ns, "
                         "uncertainty_ns, head_seq) VALUES ('central', ?, 2000000000, 0, 'damaged', 1, 1)",
                         (earlier.boot_id,))


def test_a_broken_time_service_still_records_the_punch_flagged_with_a_clock_fault(tmp_path):
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state")
    assert presensi("init", config=cfg).returncode == 0
    poison_the_time_service(tmp_path / "state", BUDI)
    result = presensi("punch", "--employee", BUDI, "--method", "pin", "--json", config=cfg)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["recorded"] is True and record["seq"] == 2
    # the kind rests on the raw wall clock: said in the answer and kept beside the record until re-anchored
    assert record["time_verified"] is False
    with punchlog.PunchLog(tmp_path / "state") as log:
        row = derived.get(log.conn, 2)
    assert row["computed_from"] == "wall" and row["time_verified"] is False, row
    shown = presensi_json("status", config=cfg)["faults"]
    assert any(f["fault_key"] == "punch:time-unverified" and f["category"] == "clock" for f in shown["open"]), \
        shown


def test_zk_and_adms_serve_raw_times_when_the_timeline_fails_but_raise_a_clock_fault(tmp_path):
    from sync.device.zk.data import RAW_TIME_FAULT, TerminalView
    from terminal.ops import faults

    cfg_path = write_config(tmp_path / "presensi.toml", tmp_path / "state")
    punchlog.init(tmp_path / "state")
    poison_the_time_service(tmp_path / "state", BUDI)
    view = TerminalView(config.load(cfg_path), tmp_path / "state")
    try:
        served = list(view.punches(0, view.head(), {BUDI: 1}))
        assert [p.seq for p in served] == [1], "delivery stalled on the broken timeline"
        assert [f["fault_key"] for f in faults.open_faults(view.log.conn)] == [RAW_TIME_FAULT]
    finally:
        view.close()
