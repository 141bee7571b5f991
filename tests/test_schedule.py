"""Punch kinds and lateness: a week of synthetic punches across windows, holidays and the three timezones,
repeats acknowledged but not recorded, and the schedule read from a real punch log."""

from __future__ import annotations

import datetime as dt

import pytest

from terminal import config
from terminal.log import punchlog
from terminal.punch import history, rules
from terminal.timing import clock

OFFSETS = {"Asia/Jakarta": 7, "Asia/Makassar": 8, "Asia/Jayapura": 9}

SCHEDULE = {
    "repeat_minutes": 30,
    "default": {"masuk": "06:00-07:30-10:00", "istirahat": "12:00-13:00", "pulang": "14:00-16:00-23:30"},
    "mon": {"apel": "06:30-07:00-07:30"},  # Monday morning assembly
    "fri": {"istirahat": "", "pulang": "11:00-11:30-23:00"},  # Friday: short day, no break punch
    "holidays": [{"date": "2026-11-25", "name": "Hari Guru Nasional"}],
    "special": [{"from": "2026-11-26", "to": "2026-11-26", "name": "Jam kerja khusus",
                 "masuk": "07:00-08:00-10:00", "pulang": "14:00-15:00-23:00"}],
}


def make_config(tz: str, extra: dict | None = None) -> config.Config:
    return config.from_dict({"device": {"id": "t", "timezone": tz}, "paths": {"state_dir": "/nonexistent"},
                             "schedule": {**SCHEDULE, **(extra or {})}}, "<test>")


def at(tz: str, day: str, hhmm: str) -> dt.datetime:
    """The aware UTC instant of an office-local time (what the corrected clock would hand over)."""
    local = dt.datetime.fromisoformat(f"{day}T{hhmm}")
    return (local - dt.timedelta(hours=OFFSETS[tz])).replace(tzinfo=dt.UTC)


# (local day, local time, employee) -> (kind, recorded, minutes_late, minutes_early, text in the message)
WEEK = [
    # Monday 23 Nov: apel, then masuk, istirahat, pulang
    ("2026-11-23", "06:50:00", "A", ("apel", True, 0, 0, "Apel Pagi 06.50")),
    ("2026-11-23", "07:05:10", "A", ("apel", False, 0, 0, "Sudah tercatat apel pagi pukul 06.50")),
    ("2026-11-23", "07:29:00", "A", ("masuk", True, 0, 0, "Masuk 07.29")),
    ("2026-11-23", "07:12:30", "B", ("apel", True, 12, 0, "terlambat 12 menit")),
    ("2026-11-23", "07:42:59", "B", ("masuk", True, 12, 0, "Masuk 07.42, terlambat 12 menit")),
    ("2026-11-23", "12:10:00", "A", ("istirahat", True, 0, 0, "Istirahat 12.10")),
    ("2026-11-23", "15:45:00", "A", ("pulang", True, 0, 15, "pulang cepat 15 menit")),
    ("2026-11-23", "16:20:00", "B", ("pulang", True, 0, 0, "Berhasil — Pegawai B, Pulang 16.20")),
    # Tuesday: no apel; 10:30 is after masuk closes -> still masuk, very late; a forgotten masuk -> pulang
    ("2026-11-24", "07:30:59", "A", ("masuk", True, 0, 0, "Masuk 07.30")),
    ("2026-11-24", "07:31:00", "C", ("masuk", True, 1, 0, "terlambat 1 menit")),
    ("2026-11-24", "10:30:00", "B", ("masuk", True, 180, 0, "terlambat 180 menit")),
    ("2026-11-24", "13:45:00", "B", ("pulang", True, 0, 135, "pulang cepat 135 menit")),
    ("2026-11-24", "16:00:00", "C", ("pulang", True, 0, 0, "Pulang 16.00")),
    ("2026-11-24", "16:10:00", "C", ("pulang", False, 0, 0, "Sudah tercatat pulang pukul 16.00")),
    ("2026-11-24", "17:00:00", "C", ("pulang", True, 0, 0, "Pulang 17.00")),
    # Wednesday: public holiday -> recorded as overtime, no lateness, the holiday named
    ("2026-11-25", "08:00:00", "A", ("lembur_masuk", True, 0, 0, "Lembur 08.00 (Hari Guru Nasional)")),
    ("2026-11-25", "12:00:00", "A", ("lembur_pulang", True, 0, 0, "Lembur 12.00")),
    # Thursday: special hours (due 08:00, pulang 15:00)
    ("2026-11-26", "07:55:00", "A", ("masuk", True, 0, 0, "Masuk 07.55")),
    ("2026-11-26", "08:20:00", "B", ("masuk", True, 20, 0, "terlambat 20 menit")),
    ("2026-11-26", "15:00:00", "A", ("pulang", True, 0, 0, "Pulang 15.00")),
    # Friday: short day, no istirahat window
    ("2026-11-27", "07:00:00", "A", ("masuk", True, 0, 0, "Masuk 07.00")),
    ("2026-11-27", "11:15:00", "A", ("pulang", True, 0, 15, "pulang cepat 15 menit")),
    ("2026-11-27", "09:50:00", "B", ("masuk", True, 140, 0, "terlambat 140 menit")),
    ("2026-11-27", "12:10:00", "C", ("pulang", True, 0, 0, "Pulang 12.10")),  # forgot masuk
    # Saturday: not a workday
    ("2026-11-28", "09:00:00", "C", ("lembur_masuk", True, 0, 0, "Lembur 09.00 (hari libur)")),
]


@pytest.mark.parametrize("tz", sorted(OFFSETS))
def test_a_week_of_punches_in_each_timezone(tz):
    sched = rules.Schedule.from_config(make_config(tz))
    recorded: dict[str, list[rules.RecentPunch]] = {}
    for seq, (day, hhmm, emp, expected) in enumerate(WEEK, 1):
        utc = at(tz, day, hhmm)
        d = sched.decide(f"Pegawai {emp}", utc, recorded.get(emp, []))
        kind, record, late, early, text = expected
        got = (d.kind, d.record, d.minutes_late, d.minutes_early)
        assert got == (kind, record, late, early), f"{tz} {day} {hhmm} {emp}: {d.message}"
        assert text in d.message, d.message
        assert d.date == day
        if d.record:
            assert d.message.startswith(f"Berhasil — Pegawai {emp}, ")
            assert d.details["minutes_late"] == late and d.details["timezone"] == tz
            recorded.setdefault(emp, []).append(rules.RecentPunch(d.kind, utc, seq))


def test_same_instant_is_later_further_east():
    utc = dt.datetime(2026, 11, 24, 0, 40, tzinfo=dt.UTC)  # 07:40 WIB = 08:40 WITA = 09:40 WIT
    lates = {tz: rules.Schedule.from_config(make_config(tz)).decide("X", utc).minutes_late for tz in OFFSETS}
    assert lates == {"Asia/Jakarta": 10, "Asia/Makassar": 70, "Asia/Jayapura": 130}


def test_local_midnight_decides_the_day_not_utc():
    # 2026-11-24 23:30 UTC is already Wednesday 25th (a holiday) in WITA, still Tuesday in UTC
    d = rules.Schedule.from_config(make_config("Asia/Makassar")).decide("X", at("Asia/Makassar",
                                                                                 "2026-11-25", "07:30"))
    assert (d.kind, d.workday, d.day_name) == ("lembur_masuk", False, "Hari Guru Nasional")


def test_zk_states_follow_the_kind():
    sched = rules.Schedule.from_config(make_config("Asia/Jakarta"))
    states = {d.kind: d.zk_state for d in (sched.decide("X", at("Asia/Jakarta", "2026-11-24", t))
                                           for t in ("07:00", "12:30", "16:30"))}
    assert states == {"masuk": 0, "istirahat": 2, "pulang": 1}
    first = sched.decide("X", at("Asia/Jakarta", "2026-11-28", "08:00"))
    second = sched.decide("X", at("Asia/Jakarta", "2026-11-28", "12:00"),
                          [rules.RecentPunch("lembur_masuk", at("Asia/Jakarta", "2026-11-28", "08:00"))])
    assert (first.zk_state, second.zk_state) == (4, 5)  # overtime in, overtime out


def test_roster_schedule_and_holidays_take_precedence():
    class Roster:  # the C4 roster surface the schedule reads
        def schedule(self):
            return {"default": {"masuk": "06:00-08:00-10:00", "pulang": "14:00-16:00-23:00"}}

        def holidays(self):
            return ["2026-11-24"]

    sched = rules.Schedule.from_config(make_config("Asia/Jakarta"), roster=Roster())
    assert sched.decide("X", at("Asia/Jakarta", "2026-11-23", "07:50")).minutes_late == 0  # due 08:00 now
    assert sched.decide("X", at("Asia/Jakarta", "2026-11-24", "07:50")).kind == "lembur_masuk"
    assert sched.decide("X", at("Asia/Jakarta", "2026-11-25", "07:50")).kind == "lembur_masuk"  # config holiday kept


def test_disabled_schedule_records_hadir():
    sched = rules.Schedule.from_config(make_config("Asia/Jakarta", {"enabled": False}))
    d = sched.decide("Budi Santoso", at("Asia/Jakarta", "2026-11-24", "09:00"))
    assert (d.kind, d.minutes_late, d.message) == ("hadir", 0, "Berhasil — Budi Santoso, Hadir 09.00")


def test_naive_time_is_refused():
    sched = rules.Schedule.from_config(make_config("Asia/Jakarta"))
    with pytest.raises(ValueError, match="aware"):
        sched.decide("X", dt.datetime(2026, 11, 24, 7, 0))


@pytest.mark.parametrize("section, expected", [
    ({"mon": {"masuk": "7:00-"}}, "[schedule] mon: masuk = '7:00-' is not 'OPEN-DUE-CLOSE'"),
    ({"default": {"masok": "07:00-08:00"}}, "[schedule] default: unknown punch kind 'masok'"),
    ({"fri": {"pulang": "16:00-11:00"}}, "must not go backwards"),
    ({"default": {"masuk": "25:00-26:00"}}, "not a time of day"),
    ({"workdays": ["mon", "jumat"]}, "[schedule] workdays: workday 'jumat'"),
    ({"holidays": ["2026-13-01"]}, "[schedule] holidays: '2026-13-01' is not a date"),
    ({"special": [{"from": "2026-03-02", "to": "2026-03-01"}]}, "'to' is before 'from'"),
    ({"repeat_minutes": -1}, "[schedule] repeat_minutes = -1.0 is out of range"),
])
def test_bad_schedule_config_names_file_and_key(tmp_path, section, expected):
    lines = ['[device]\nid = "x"\n[paths]\nstate_dir = "/x"\n[schedule]']
    path = tmp_path / "p.toml"
    import json
    for key, value in section.items():
        lines.append(f"{key} = {_toml(value, json)}")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def _toml(value, json) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v, json)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v, json) for v in value) + "]"
    return json.dumps(value)


def reading_at(boot_id: str, boottime_s: float, realtime_ns: int) -> clock.ClockReading:
    ns = int(boottime_s * 1e9)
    return clock.ClockReading(boot_id=boot_id, monoraw_ns=ns, boottime_ns=ns, realtime_ns=realtime_ns,
                              timex_status=0x40, maxerror_us=16_000_000)


def test_repeat_is_found_in_the_real_log_even_with_the_wall_clock_in_1970(tmp_path):
    """The daemon's path: the log is read, the decision is made from corrected time, a repeat is not
    recorded. The Pi's wall clock says 1970; the same-boot monotonic clock places the earlier punch."""
    punchlog.init(tmp_path)
    sched = rules.Schedule.from_config(make_config("Asia/Jakarta"))
    first_utc = at("Asia/Jakarta", "2026-11-24", "07:02")
    with punchlog.PunchLog(tmp_path) as log:
        r1 = reading_at("boot-1", 100.0, 5_000_000_000)  # wall clock: 1970
        d1 = history.decide_for_log(sched, log.conn, "199001", "Budi Santoso", first_utc, r1)
        assert d1.record and d1.message == "Berhasil — Budi Santoso, Masuk 07.02"
        log.append("199001", "face", kind=d1.kind, details=d1.details, reading=r1)
        log.append("199002", "face", kind="masuk", reading=reading_at("boot-1", 110.0, 5_010_000_000))

        r2 = reading_at("boot-1", 100.0 + 5 * 60, 5_300_000_000)
        d2 = history.decide_for_log(sched, log.conn, "199001", "Budi Santoso",
                                     first_utc + dt.timedelta(minutes=5), r2)
        assert (d2.record, d2.message) == (False, "Sudah tercatat masuk pukul 07.02")
        assert d2.repeat_of["seq"] == 1

        r3 = reading_at("boot-1", 100.0 + 9 * 3600, 5_000_000_000 + 9 * 3600 * 10**9)
        d3 = history.decide_for_log(sched, log.conn, "199001", "Budi Santoso",
                                     first_utc + dt.timedelta(hours=9), r3)
        assert (d3.record, d3.kind, d3.minutes_early) == (True, "pulang", 0)
        assert log.head()[0] == 2  # the repeat added nothing


def test_zk_states_agree_with_the_zk_servers_state_map():
    zk = config.Zk()
    assert {k: zk.state_map.get(k, zk.unknown_state) for k in rules.ZK_STATES} == rules.ZK_STATES


def test_repeat_across_a_reboot_uses_the_earlier_boots_time(tmp_path):
    """Power cut at 07:03, back at 07:05: the punch before the cut is found through the time service's
    annotation (or the wall clock), not the new boot's monotonic clock."""
    punchlog.init(tmp_path)
    sched = rules.Schedule.from_config(make_config("Asia/Makassar"))
    first_utc = at("Asia/Makassar", "2026-11-24", "07:02")
    with punchlog.PunchLog(tmp_path) as log:
        before = reading_at("boot-A", 50.0, int(first_utc.timestamp() * 1e9))
        log.append("199001", "finger", kind="masuk", reading=before)
        after = reading_at("boot-B", 30.0, int(first_utc.timestamp() * 1e9) + 240 * 10**9)
        d = history.decide_for_log(sched, log.conn, "199001", "Siti", first_utc + dt.timedelta(minutes=4), after)
        assert (d.record, d.message) == (False, "Sudah tercatat masuk pukul 07.02")
        # two mornings later (the 25th is a holiday) the same employee's punch is a fresh masuk
        d2 = history.decide_for_log(sched, log.conn, "199001", "Siti", first_utc + dt.timedelta(days=2),
                                     reading_at("boot-B", 2 * 86400.0, 0))
        assert (d2.record, d2.kind) == (True, "masuk")


def test_a_malformed_roster_schedule_falls_back_to_the_configuration():
    class BadRoster:
        def schedule(self):
            return {"default": {"masuk": "seven o'clock"}}

        def holidays(self):
            return ["2026-11-24"]

    sched = rules.Schedule.from_config(make_config("Asia/Jakarta"), roster=BadRoster())
    assert sched.source == "config" and "seven o'clock" in sched.problem
    d = sched.decide("X", at("Asia/Jakarta", "2026-11-24", "07:40"))
    assert (d.kind, d.minutes_late) == ("masuk", 10)  # the configured windows, punches go on


def test_schedule_and_holidays_from_an_installed_roster(tmp_path):
    """C4: the roster the central server published (terminal/punch/roster.py) decides the windows and holidays."""
    from terminal.punch import roster
    roster.install(tmp_path, version=3, employees=[{"id": "199001", "name": "Budi Santoso", "uid": 1}],
                   schedule={"default": {"masuk": "06:00-08:00-10:00", "pulang": "14:00-16:30-23:00"},
                             "fri": {"pulang": "11:00-11:30-23:00"}},
                   holidays=[{"date": "2026-11-24", "name": "Cuti bersama"}])
    with roster.Roster.open(tmp_path) as r:
        sched = rules.Schedule.from_config(make_config("Asia/Jayapura"), roster=r)
    assert sched.source == "roster"
    assert sched.decide("Budi", at("Asia/Jayapura", "2026-11-23", "08:05")).minutes_late == 5
    assert sched.decide("Budi", at("Asia/Jayapura", "2026-11-24", "08:05")).day_name == "Cuti bersama"
    assert sched.decide("Budi", at("Asia/Jayapura", "2026-11-27", "11:20")).minutes_early == 10


def test_schedule_commands_show_the_plan_and_try_a_time(tmp_path):
    from conftest import presensi, presensi_json, write_config

    cfg = write_config(tmp_path / "p.toml", tmp_path / "state", extra=(
        '\n[schedule]\nmon = { apel = "06:30-07:00-07:30" }\n'
        'holidays = [{ date = "2026-11-25", name = "Hari Guru Nasional" }]\n'))
    assert presensi("init", config=cfg).returncode == 0
    shown = presensi_json("schedule", "show", "--date", "2026-11-23", "--days", "3", config=cfg)
    assert shown["source"] == "config"
    assert [d["workday"] for d in shown["days"]] == [True, True, False]
    assert shown["days"][0]["windows"]["apel"] == {"opens": "06:30", "due": "07:00", "closes": "07:30"}
    assert shown["days"][2]["name"] == "Hari Guru Nasional"
    tried = presensi_json("schedule", "try", "--at", "2026-11-24 07:42", "--name", "Budi Santoso", config=cfg)
    assert tried["message"] == "Berhasil — Budi Santoso, Masuk 07.42, terlambat 12 menit"
    bad = presensi("schedule", "try", "--at", "besok pagi", config=cfg)
    assert bad.returncode != 0 and "use 'YYYY-MM-DD HH:MM'" in bad.stderr
