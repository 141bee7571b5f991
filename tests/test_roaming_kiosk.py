"""The kiosk at 800x480 showing a message from the central server after a punch and a cancelled apel pagi
(issue 17), in Bahasa Indonesia and without overflow: a real daemon (tests/test_web.py's Terminal), the
reference central server publishing them in a signed roster, headless Chromium. Screenshots go to
artifacts/ beside the other kiosk screenshots. Also the admin page's own apel cancellation."""

from __future__ import annotations

import datetime as dt
import re

# test_web's module fixtures: this module gets its own central server and daemon from them
from test_web import ARTIFACTS, BUDI, LONG_NAME, LONG_NAME_ID, NO_PIN, OVERFLOW_JS, _shown_after, central, terminal

from sync.device import roster_client
from sync.server import notices as server_notices
from sync.server import republish
from sync.wire.rosterbundle import BundleRejected
from terminal.punch import roster

__all__ = ["central", "terminal"]  # used by name as fixtures, not called


ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SCHEDULE = {"default": {"apel": "06:30-07:00-07:20", "masuk": "00:00-07:30-12:00", "pulang": "12:01-16:00-23:59"},
            "workdays": ALL_DAYS}
FOR_BUDI = "Budi, segera lengkapi dokumen SKP tahun ini di BKPSDM sebelum tanggal 15"
FOR_ALL = "Senin depan upacara Hari Korpri; pakaian Korpri lengkap"


def _today(terminal) -> dt.date:
    schedule = terminal.daemon.punches.schedule
    return schedule.local(dt.datetime.now(dt.UTC)).date()


def _publish(central, terminal, **kw) -> None:
    """The central server publishes the terminal's people with the schedule, then the terminal pulls it."""
    with roster.Roster.open(terminal.state) as r:
        people = r.employees()
    version = roster.current_version(terminal.state) + 1
    republish.publish_next(central.app.store, employees=people, schedule=SCHEDULE, holidays=[], version=version, **kw)
    try:
        roster_client.pull_roster(terminal.cfg)
    except BundleRejected as e:  # the daemon's own roster job fetched it a moment earlier
        assert e.code == "old-version", e
    assert roster.current_version(terminal.state) == version
    terminal.daemon.on_roster_change()


def _kiosk(browser, terminal):
    if browser.js("location.pathname") != "/":
        browser.navigate(terminal.base + "/")
    browser.wait_for("window.__kiosk.connected && window.__kiosk.status !== null")
    browser.wait_for("document.getElementById('preview').naturalWidth > 0", 20)  # the camera in the picture


def test_kiosk_shows_the_servers_message_after_the_punch(central, terminal, browser):
    store, today = central.app.store, _today(terminal)
    day = dt.timedelta(days=1)
    server_notices.add_message(store, FOR_BUDI, str(today - day), str(today + day), BUDI)
    server_notices.add_message(store, FOR_ALL, str(today), str(today))
    server_notices.add_message(store, "Pesan untuk pegawai lain", str(today), str(today), NO_PIN)
    _publish(central, terminal)
    _kiosk(browser, terminal)
    count = browser.js("window.__kiosk.shown.length")
    outcome = terminal.daemon.punches.punch(BUDI, "pin", details={"operator": "test"})
    assert outcome.acknowledged and outcome.notices == [FOR_BUDI, FOR_ALL]
    shown = _shown_after(browser, count, text=outcome.message)
    assert shown["notices"] == [FOR_BUDI, FOR_ALL]
    browser.wait_for("!document.getElementById('notices').hidden", 5)
    items = browser.js("[...document.querySelectorAll('#notices li')].map(li => li.innerText)")
    assert items == [FOR_BUDI, FOR_ALL]
    assert browser.js("[innerWidth, innerHeight]") == [800, 480]
    assert browser.js(OVERFLOW_JS) == []
    browser.screenshot(ARTIFACTS / "kiosk-pesan.png")
    # the longest name with three messages at their longest (300 characters, the server's limit) still fits
    count = browser.js("window.__kiosk.shown.length")
    longest = [(FOR_BUDI + " " + FOR_ALL + " ") * 3, ("Pemberitahuan " + FOR_ALL + " ") * 5, "X" * 40 + FOR_ALL * 6]
    longest = [text[:server_notices.MAX_TEXT] for text in longest]
    terminal.daemon.events.publish("decision", {"accepted": True, "recorded": True, "notices": longest,
                                                "message": f"Berhasil — {LONG_NAME}, Masuk 07.02, terlambat 5 menit"})
    _shown_after(browser, count)
    assert browser.js(OVERFLOW_JS) == []
    browser.screenshot(ARTIFACTS / "kiosk-pesan-terpanjang.png")
    outcome = terminal.daemon.punches.punch(LONG_NAME_ID, "pin", details={"operator": "test"})
    assert outcome.notices == [FOR_ALL]  # not Budi's, not the other employee's


def test_kiosk_says_todays_apel_is_cancelled_and_a_punch_then_is_no_apel(central, terminal, browser):
    today = _today(terminal)
    server_notices.cancel_apel(central.app.store, str(today), "hujan lebat")
    _publish(central, terminal)
    assert terminal.daemon.indicators()["apel_cancelled"] is True
    browser.navigate(terminal.base + "/")  # a fresh page: the idle screen, nothing of an earlier punch
    _kiosk(browser, terminal)
    terminal.daemon.events.publish("status", terminal.daemon.indicators())
    browser.wait_for("!document.getElementById('apel').hidden", 10)
    assert "Apel pagi hari ini ditiadakan" in browser.js("document.body.innerText")
    assert browser.js("document.getElementById('result').className") == "idle"
    assert browser.js(OVERFLOW_JS) == []
    browser.screenshot(ARTIFACTS / "kiosk-apel-ditiadakan.png")
    plan = terminal.daemon.punches.schedule.day_plan(today)
    assert plan.apel_cancelled and "apel" not in {w.kind for w in plan.windows}
    outcome = terminal.daemon.punches.punch(NO_PIN, "finger")
    assert outcome.recorded and outcome.kind != "apel"
    server_notices.restore_apel(central.app.store, str(today))
    _publish(central, terminal)
    assert terminal.daemon.indicators()["apel_cancelled"] is False


def test_the_admin_page_cancels_an_apel_for_a_date(terminal):
    session, csrf = terminal.login()
    date = str(_today(terminal) + dt.timedelta(days=3))
    page = session.post(terminal.base + "/admin/apel", data={"csrf": csrf, "date": date, "reason": "kerja bakti",
                                                             "action": "cancel"}, timeout=10)
    assert page.status_code == 200 and f"Apel pagi {date} ditiadakan" in page.text
    assert re.search(rf"<td>{date}</td><td>kerja bakti</td><td>terminal ini", page.text)
    assert dt.date.fromisoformat(date) in terminal.daemon.punches.schedule.apel_cancelled
    assert any(e["action"] == "apel-cancel" for e in terminal.audit())
    forged = session.post(terminal.base + "/admin/apel", data={"date": date, "action": "restore"}, timeout=10)
    assert forged.status_code in (400, 403)  # no CSRF token: nothing changes
    assert dt.date.fromisoformat(date) in terminal.daemon.punches.schedule.apel_cancelled
    bad = session.post(terminal.base + "/admin/apel", data={"csrf": csrf, "date": "besok"}, timeout=10)
    assert bad.status_code == 400
    session.post(terminal.base + "/admin/apel", data={"csrf": csrf, "date": date, "action": "restore"}, timeout=10)
    assert dt.date.fromisoformat(date) not in terminal.daemon.punches.schedule.apel_cancelled


def test_the_daemon_sends_an_enrolment_and_installs_the_roster_that_carries_it(central, terminal):
    """The daemon's own path: its enrolment_upload job sends the outbox, the server publishes, the job asks
    for the roster at once, and the daemon's gallery gets the template from the roster."""
    import time

    import numpy as np

    from terminal.app import jobs
    from terminal.face.store import all_templates
    from terminal.punch import enrolments

    with roster.Roster.open(terminal.state) as r:
        people = r.employees()
    republish.publish_next(central.app.store, employees=people, schedule=SCHEDULE, holidays=[],
                           version=roster.current_version(terminal.state) + 1)
    def enrolment_key():
        with roster.Roster.open(terminal.state) as r:
            return r.enrolment_key()

    deadline = time.monotonic() + 30  # the roster brings the server's enrolment key
    while not enrolment_key() and time.monotonic() < deadline:
        jobs.roster_refresh(terminal.daemon.jobs)
    vec = np.random.default_rng(17).normal(size=128).astype(np.float32)
    vec /= np.linalg.norm(vec)
    enrolments.record_in(terminal.state, NO_PIN, "face", [vec])
    before = roster.current_version(terminal.state)
    sent = jobs.enrolment_upload(terminal.daemon.jobs)
    assert sent["accepted"] == 1, sent
    deadline = time.monotonic() + 30
    while roster.current_version(terminal.state) <= before and time.monotonic() < deadline:
        time.sleep(0.1)  # the roster job the upload triggered
    with roster.Roster.open(terminal.state) as r:
        carried = r.employee(NO_PIN)["face_templates"]
    assert [enrolments.template_sha256("face", t) for t in carried] == [enrolments.template_sha256("face", vec)]
    assert enrolments.template_sha256("face", all_templates(terminal.state)[NO_PIN][0]) == \
        enrolments.template_sha256("face", vec)
