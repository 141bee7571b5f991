"""The punch service every method goes through: kind from the schedule, repeats, feedback after commit."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import presensi, presensi_json, write_config

from terminal import config
from terminal.log import punchlog
from terminal.punch import roster
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
