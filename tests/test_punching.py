"""The punch service every method goes through: kind from the schedule, repeats, feedback after commit."""

from __future__ import annotations

import datetime as dt

import pytest

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
    roster.install(cfg.state_dir, version=1, employees=[{"id": "2002", "name": "Budi Santoso", "uid": 2002}],
                   holidays=[{"date": today, "name": "Libur Daerah"}])
    svc.reload_schedule()
    outcome = svc.punch("2002", "pin")
    assert outcome.recorded
    assert outcome.decision["workday"] is False
    assert outcome.decision["day_name"] == "Libur Daerah"
