"""Messages to employees and apel cancellations on the terminal (issue 17): the rule for a punch in a
cancelled apel window, the missing pulang the terminal notices itself, messages from the signed roster with
their validity, and a forged bundle carrying a message or a cancellation refused. Real punch databases,
real roster files, bundles signed and verified as the server and the terminal do."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.device import roster_client
from sync.wire import rosterbundle
from terminal import config
from terminal.log import chain, punchlog
from terminal.punch import derived, notices, roster, rules
from terminal.punch.service import PunchService, load_schedule

BUDI = "199001012020011001"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WINDOWS = {"apel": "06:30-07:00-07:20", "masuk": "06:00-07:30-10:00", "pulang": "14:00-16:00-23:59"}
TZ = "Asia/Jakarta"
WIB = dt.timezone(dt.timedelta(hours=7))


def _cfg(tmp_path, server_key: str = "") -> config.Config:
    return config.from_dict({"device": {"id": "opd-01", "timezone": TZ}, "paths": {"state_dir": str(tmp_path)},
                             "central": {"server_key": server_key},
                             "schedule": {"default": WINDOWS, "workdays": ALL_DAYS}})


def _utc(local: str) -> dt.datetime:
    return dt.datetime.fromisoformat(local).replace(tzinfo=WIB).astimezone(dt.UTC)


def test_a_punch_in_a_cancelled_apel_window_is_a_masuk_without_apel_lateness():
    sched = rules.Schedule(TZ, default=WINDOWS, workdays=ALL_DAYS, apel_cancelled=["2026-03-02"])
    normal = sched.classify("Budi", _utc("2026-03-03T07:10:00"))
    assert (normal.kind, normal.minutes_late) == ("apel", 10)  # apel due 07:00
    cancelled = sched.classify("Budi", _utc("2026-03-02T07:10:00"))
    assert (cancelled.kind, cancelled.minutes_late) == ("masuk", 0)  # masuk due 07:30: on time
    late = sched.classify("Budi", _utc("2026-03-02T07:45:00"))
    assert (late.kind, late.minutes_late) == ("masuk", 15)
    assert sched.day_plan(dt.date(2026, 3, 2)).apel_cancelled and not sched.day_plan(dt.date(2026, 3, 3)).apel_cancelled


def test_cancellations_of_the_roster_and_of_the_admin_page_both_apply(tmp_path):
    punchlog.init(tmp_path)
    roster.install(tmp_path, version=1, employees=[], apel_cancelled=[{"date": "2026-03-02", "reason": "hujan"}])
    with punchlog.PunchLog(tmp_path) as plog:
        notices.cancel_apel(plog.conn, "2026-03-09", "upacara", "admin")
    sched = load_schedule(_cfg(tmp_path))
    assert sched.apel_cancelled == {dt.date(2026, 3, 2), dt.date(2026, 3, 9)}
    with punchlog.PunchLog(tmp_path) as plog:
        notices.restore_apel(plog.conn, "2026-03-09")
    assert load_schedule(_cfg(tmp_path)).apel_cancelled == {dt.date(2026, 3, 2)}


def _punch_on(plog, sched, employee: str, local: str) -> None:
    """A punch of an earlier boot, recorded at that time with its kind and date derived as on that day."""
    import dataclasses

    from terminal.timing import clock

    when = _utc(local)
    reading = dataclasses.replace(clock.read(), boot_id=f"yesterday-{local}", realtime_ns=int(when.timestamp() * 1e9))
    decision = sched.classify("Budi", when)
    plog.append(employee, "pin", reading=reading, derived=derived.values(
        decision, timezone=TZ, basis="manual", computed_from="utc", verified=True))


@pytest.mark.parametrize("yesterday,expected", [(["07:05"], True), (["07:05", "16:10"], False), ([], False)])
def test_the_first_punch_after_a_day_without_pulang_says_so(tmp_path, yesterday, expected):
    punchlog.init(tmp_path)
    cfg = _cfg(tmp_path)
    with punchlog.PunchLog(tmp_path) as plog:
        service = PunchService(cfg, plog)
        today = service.schedule.local(dt.datetime.now(dt.UTC)).date()
        for hhmm in yesterday:
            _punch_on(plog, service.schedule, BUDI, f"{today - dt.timedelta(days=1)}T{hhmm}:00")
        first = service.punch(BUDI, "pin")
        assert first.recorded
        assert (notices.MISSING_PULANG in first.notices) is expected
        assert all(isinstance(n, str) for n in first.notices)


def test_messages_from_the_roster_are_shown_to_their_employee_within_their_dates(tmp_path):
    punchlog.init(tmp_path)
    today = dt.datetime.now(dt.UTC).astimezone(WIB).date()
    day = dt.timedelta(days=1)
    roster.install(tmp_path, version=1, employees=[
        {"id": BUDI, "name": "Budi", "uid": 1, "pin_allowed": True},
        {"id": "P2", "name": "Sari", "uid": 2, "pin_allowed": True}], messages=[
        {"id": 1, "employee": None, "text": "Besok upacara HUT Korpri", "valid_from": str(today),
         "valid_until": str(today)},
        {"id": 2, "employee": BUDI, "text": "Segera perbarui data SKP", "valid_from": str(today - day),
         "valid_until": str(today + day)},
        {"id": 3, "employee": "P2", "text": "Untuk Sari saja", "valid_from": str(today), "valid_until": str(today)},
        {"id": 4, "employee": None, "text": "Sudah lewat", "valid_from": str(today - 3 * day),
         "valid_until": str(today - day)}])
    with punchlog.PunchLog(tmp_path) as plog:
        notices.put_message(plog.conn, "zk", 7, "listed", "Pesan dari mesin", f"{today} 00:00:00",
                            f"{today} 23:59:59")
        notices.add_recipient(plog.conn, "zk", 7, BUDI)
        outcome = PunchService(_cfg(tmp_path), plog).punch(BUDI, "pin")
    assert outcome.notices == ["Besok upacara HUT Korpri", "Segera perbarui data SKP", "Pesan dari mesin"]


def _bundle(key, version, **kw):
    return rosterbundle.build_bundle(key, version, [{"id": BUDI, "name": "Budi", "uid": 1, "pin_allowed": True}],
                                     {}, [], **kw)


def test_a_message_or_apel_cancellation_not_signed_by_the_server_is_refused(tmp_path):
    punchlog.init(tmp_path)
    server, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    cfg = _cfg(tmp_path, chain.public_key_b64(server))
    today = str(dt.date.today())
    message = [{"id": 1, "employee": None, "text": "Tidak perlu masuk hari ini", "valid_from": today,
                "valid_until": today}]
    for i, forged in enumerate([_bundle(attacker, 5, messages=message),
                                _bundle(attacker, 5, apel_cancelled=[{"date": today, "reason": ""}])]):
        with pytest.raises(rosterbundle.BundleRejected) as e:
            roster_client.install_bundle(cfg, forged, source=f"forged-{i}")
        assert e.value.code == "bad-signature"
    # a genuine bundle, altered after signing to add a message: the signature no longer holds
    genuine = _bundle(server, 6)
    import gzip

    altered = gzip.compress(gzip.decompress(genuine).replace(b'"messages":[]', b'"messages":[{"id":1,"employee":'
                                                             b'null,"text":"x","valid_from":"2026-01-01",'
                                                             b'"valid_until":"2026-12-31"}]'))
    with pytest.raises(rosterbundle.BundleRejected):
        roster_client.install_bundle(cfg, altered, source="altered")
    assert roster.current_version(tmp_path) == 0 and load_schedule(cfg).apel_cancelled == set()
    # the server's own bundle is taken, messages and all
    installed = roster_client.install_bundle(cfg, _bundle(server, 7, messages=message), source="server")
    assert installed["messages"] == 1
    with roster.Roster.open(tmp_path) as r:
        assert [m["text"] for m in r.messages()] == ["Tidak perlu masuk hari ini"]


@pytest.mark.parametrize("bad", [
    {"messages": [{"id": 1, "employee": "NOBODY", "text": "x", "valid_from": "2026-01-01",
                   "valid_until": "2026-01-02"}]},
    {"messages": [{"id": 1, "employee": None, "text": "x", "valid_from": "2026-02-30", "valid_until": "2026-03-01"}]},
    {"messages": [{"id": 1, "employee": None, "text": "x\nline", "valid_from": "2026-01-01",
                   "valid_until": "2026-01-02"}]},
    {"messages": [{"id": 1, "employee": None, "text": "x", "valid_from": "2026-01-05", "valid_until": "2026-01-02"}]},
    {"apel_cancelled": [{"date": "besok"}]},
])
def test_malformed_messages_and_cancellations_are_refused_when_built_and_when_received(bad):
    key = Ed25519PrivateKey.generate()
    with pytest.raises(rosterbundle.BundleRejected):
        _bundle(key, 1, **bad)
    manifest = {"type": "presensi-roster", "version": 1, "device": None, "created_utc": "2026-01-01T00:00:00Z",
                "employees": [{"id": BUDI, "name": "Budi", "uid": 1, "pin_allowed": True}], "schedule": {},
                "holidays": [], "messages": [], "apel_cancelled": [], **bad}
    with pytest.raises(rosterbundle.BundleRejected) as e:
        rosterbundle.verify_bundle(rosterbundle.sign_manifest(key, manifest), key.public_key(), 0)
    assert e.value.code == "malformed"
