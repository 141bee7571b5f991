"""BKPSDM's recap page in a real headless Chromium against `presensi server run` on 127.0.0.1 (SQLite and
PostgreSQL), with two real terminals recording through the punch service (tests/test_recap.py's month: late
arrivals, an early pulang, a missing pulang, an apel, a cancelled apel, an edited record) and pushing over
HTTP: a figure on the page matches the punches recorded, its link leads to exactly those punches and on to
the punches page, the CSV and XLSX downloads carry the same figures; screenshots at 1280x800 and 390x844.
Refused without a login and for Diskominfo; odd queries are refused and change nothing."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import openpyxl
import pytest
import requests
from synctools import serve_in_thread
from test_recap import EXPECTED, A, B, _publish_roster, _record
from test_server_pages import Fleet, login, logout, shoot, text

from sync.server import accounts, recapexport
from sync.server.app import make_app

MONTH = "2026-11"


@pytest.fixture(params=["sqlite", "postgres"])
def central(request, tmp_path, monkeypatch):
    monkeypatch.setenv("PRESENSI_SERVER_KEY_DIR", str(tmp_path / "server.keys"))  # the server process too
    db = str(tmp_path / "central.db") if request.param == "sqlite" else request.getfixturevalue("pg")()
    f = Fleet(tmp_path, db)
    yield f
    f.close()


def cells(browser, selector: str) -> dict[str, str]:
    return browser.js(f"Object.fromEntries([...document.querySelectorAll({json.dumps(selector)} + ' td')]"
                      ".map(td => [td.className.replace('fig ', ''), td.innerText]))")


def fetched(browser, url: str, path: str) -> tuple[int, str, bytes]:
    """What the browser's session gets for `path`, as a download does: (status, content type, body). The
    pages' Content-Security-Policy forbids scripts to fetch, so the session cookie (HttpOnly) is read over
    the DevTools protocol and the file fetched with it."""
    jar = {c["name"]: c["value"] for c in browser.call("Network.getAllCookies")["cookies"]}
    r = requests.get(url + path, cookies={k: v for k, v in jar.items() if k == "presensi_server"},
                     allow_redirects=False, timeout=30)
    return r.status_code, r.headers.get("Content-Type", ""), r.content


def test_the_recap_page_its_links_and_files_match_the_punches(central, browser, tmp_path):
    url = central.url
    _record(tmp_path, url, SimpleNamespace(store=central.store))
    _publish_roster(central.store, central.db)

    # without a login: nothing of the recap, neither the page nor its files
    for path in (f"/recap?month={MONTH}", f"/recap.csv?month={MONTH}", f"/recap.xlsx?month={MONTH}",
                 f"/recap/punches?month={MONTH}&employee={A}&figure=minutes_late"):
        r = requests.get(url + path, allow_redirects=False, timeout=10)
        assert r.status_code == 303 and r.headers["Location"] == "/login" and A not in r.text, path
    browser.navigate(url + f"/recap?month={MONTH}")
    assert browser.js("location.pathname") == "/login" and A not in browser.js("document.body.innerText")

    # Diskominfo: refused, the link not in its navigation, the refusal audited
    login(browser, url, "dk")
    assert "Rekap bulanan" not in text(browser, "nav")
    for path in (f"/recap?month={MONTH}", f"/recap/punches?month={MONTH}&employee={A}&figure=minutes_late"):
        browser.navigate(url + path)
        assert "Akses ditolak" in text(browser, "h1") and A not in browser.js("document.body.innerText")
    for fmt in ("csv", "xlsx"):
        status, _, body = fetched(browser, url, f"/recap.{fmt}?month={MONTH}")
        assert status == 403 and A.encode() not in body
    logout(browser)

    # BKPSDM opens the recap from the navigation
    login(browser, url, "bk")
    browser.js("[...document.querySelectorAll('nav a')].find(a => a.innerText === 'Rekap bulanan').click()")
    browser.wait_for("location.pathname === '/recap' && document.readyState === 'complete'")
    browser.submit("#filters", {"month": MONTH})
    assert "20 hari kerja" in text(browser, "#calendar") and "Upacara HUT kabupaten" in text(browser, "#calendar")
    row = cells(browser, f"#emp-{A}")
    want = EXPECTED[A]
    for figure in ("days_present", "days_absent", "minutes_late", "minutes_early", "missing_masuk",
                   "missing_pulang", "apel_attended", "apel_missed", "days_off_worked", "unverified"):
        assert row[figure] == str(want[figure]), (figure, row)
    assert row["name"] == "Sri Wahyuni" and row["work_codes"] == "2 (1x)"
    assert cells(browser, f"#emp-{B}")["apel_missed"] == "1"  # the cancelled apel of the 9th is not missed
    shoot(browser, "recap")

    # the late minutes lead to the three late arrivals the terminal recorded, adding up to the figure
    browser.js(f"document.querySelector('#emp-{A} td.minutes_late a').click()")
    browser.wait_for("location.pathname === '/recap/punches' && document.readyState === 'complete'")
    late = browser.js("[...document.querySelectorAll('tr.punch')].map(tr => ['date', 'time', 'kind', 'late']"
                      ".map(c => tr.querySelector('.' + c).innerText))")
    assert late == [["2026-11-03", "07:42:00", "Masuk", "12 menit"], ["2026-11-04", "07:35:00", "Masuk", "5 menit"],
                    ["2026-11-06", "07:50:00", "Masuk", "20 menit"]]
    assert sum(int(r[3].split()[0]) for r in late) == want["minutes_late"] == int(text(browser, "#summary .value"))
    shoot(browser, "recap-punches")
    # and each on to the punches page of that day
    browser.js("document.querySelector('tr.punch a.day').click()")
    browser.wait_for("location.pathname === '/punches' && document.readyState === 'complete'")
    day = browser.js("[...document.querySelectorAll('tr.punch')].map(tr => ['employee', 'kind', 'late']"
                     ".map(c => tr.querySelector('.' + c).innerText))")
    assert ["198501012010011001", "Masuk", "12 menit"] in day and all(r[0] == A for r in day)

    # the files, fetched with the session as the download buttons do, carry the same figures
    browser.navigate(url + f"/recap?month={MONTH}")
    assert browser.js("document.getElementById('download-csv').getAttribute('href')") == f"/recap.csv?month={MONTH}"
    status, ctype, raw = fetched(browser, url, f"/recap.csv?month={MONTH}")
    assert status == 200 and ctype.startswith("text/csv")
    lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    header = lines[0]
    assert header == [recapexport.HEADERS[c] for c in recapexport.COLUMNS]
    by_nip = {line[0]: dict(zip(recapexport.COLUMNS, line, strict=True)) for line in lines[1:]}
    status, ctype, raw = fetched(browser, url, f"/recap.xlsx?month={MONTH}")
    assert status == 200 and "spreadsheetml" in ctype
    sheet = openpyxl.load_workbook(io.BytesIO(raw))["Rekap"]
    xlsx = {r[0]: dict(zip(recapexport.COLUMNS, r, strict=True)) for r in sheet.iter_rows(min_row=2, values_only=True)}
    for nip in (A, B):
        for figure, value in EXPECTED[nip].items():
            if figure == "work_codes":
                value = recapexport.work_codes_text(value)
            assert by_nip[nip][figure] == str(value), (nip, figure)
            assert xlsx[nip][figure] == (value if value != "" else None), (nip, figure)
    logout(browser)
    audit = [(a["actor"], a["action"], a["target"]) for a in accounts.audit_log(central.store, 100)]
    assert ("bk", "recap-csv", MONTH) in audit and ("bk", "recap-xlsx", MONTH) in audit
    assert sum(1 for a in audit if a[:2] == ("dk", "forbidden")) >= 4


def test_odd_recap_queries_are_refused_and_store_nothing(tmp_path):
    """What someone with a BKPSDM login (or none) on the office LAN might try against the recap's routes."""
    from test_server_pages_attacks import PASSWORD, logged_in

    app = make_app(str(tmp_path / "central.db"))
    for user, role in (("dk", "diskominfo"), ("bk", "bkpsdm")):
        accounts.add(app.store, user, role, PASSWORD, actor="test")
    with serve_in_thread(app) as url:
        bk = logged_in(url, "bk")
        page = bk.get(url + f"/recap?month={MONTH}", timeout=10)
        assert page.status_code == 200 and "Belum ada daftar pegawai (roster) yang diterbitkan" in page.text
        for path, params in (("/recap", {"month": "2026-13"}), ("/recap", {"month": "2026-11' OR '1'='1"}),
                             ("/recap.csv", {"month": "../../etc/passwd"}), ("/recap.xlsx", {"month": "202611"}),
                             ("/recap", {"page": "0"}), ("/recap", {"employee": "\x00"}),
                             ("/recap/punches", {"month": MONTH, "employee": A, "figure": "password"}),
                             ("/recap/punches", {"month": MONTH, "employee": A, "figure": "x' --"}),
                             ("/recap/punches", {"month": MONTH, "figure": "minutes_late"})):
            r = bk.get(url + path, params=params, allow_redirects=False, timeout=10)
            assert r.status_code == 400 and "tidak valid" in r.text and "Content-Disposition" not in r.headers, \
                (path, params, r.status_code)
        r = bk.get(url + "/recap/punches", params={"month": MONTH, "employee": "nobody", "figure": "minutes_late"},
                   timeout=10)
        assert r.status_code == 404
        forged = requests.get(url + f"/recap.csv?month={MONTH}", cookies={"presensi_server": "forged"},
                              allow_redirects=False, timeout=10)
        assert forged.status_code == 303 and forged.content == b""
        dk = logged_in(url, "dk")
        assert dk.get(url + f"/recap.csv?month={MONTH}", timeout=10).status_code == 403
        assert bk.post(url + f"/recap.csv?month={MONTH}", timeout=10).status_code == 405
        actions = [a["action"] for a in accounts.audit_log(app.store, 100)]
        assert "recap-csv" not in actions and "recap-xlsx" not in actions and "forbidden" in actions
        assert app.store.punch_count() == 0
        # a published roster the recap cannot trust: refused with what to do, no file
        app.store.publish_roster(1, b"not a signed bundle")
        for path in ("/recap", "/recap.csv", "/recap.xlsx"):
            r = bk.get(url + path, params={"month": MONTH}, timeout=10)
            assert r.status_code == 409 and "publish-roster" in r.text and "Content-Disposition" not in r.headers
    app.store.close()


def test_downloads_build_a_month_once_while_clerks_click_and_again_after_a_while(tmp_path, monkeypatch):
    """Concurrent downloads of a month share one build of the whole month; one older than CACHE_S is built
    again."""
    import threading

    from sync.server import recap as recap_mod
    from sync.server.pages import recap as page
    from sync.server.storage import open_store

    store = open_store(str(tmp_path / "central.db"), key_dir=tmp_path / "keys")
    builds, real = [], recap_mod.build
    monkeypatch.setattr(recap_mod, "build", lambda s, m: builds.append(m) or real(s, m))
    cache, got = page.Cache(), []
    threads = [threading.Thread(target=lambda: got.append(cache.get(store, MONTH)[1])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 4 and all(r is got[0] for r in got) and builds == [MONTH]
    monkeypatch.setattr(page, "CACHE_S", 0.0)
    assert cache.get(store, MONTH)[1] is not got[0] and builds == [MONTH, MONTH]
    # a build that takes longer than CACHE_S (a whole regency's month on a slow server) still serves the
    # downloads right after it: its age counts from when it was ready
    monkeypatch.setattr(page, "CACHE_S", 120.0)
    now = [1000.0]
    monkeypatch.setattr(page, "time", SimpleNamespace(monotonic=lambda: now[0]))

    def slow(s, m):
        now[0] += 300.0
        return real(s, m)

    monkeypatch.setattr(recap_mod, "build", lambda s, m: builds.append(m) or slow(s, m))
    fresh = page.Cache()
    first = fresh.get(store, MONTH)[1]
    assert fresh.get(store, MONTH)[1] is first and builds == [MONTH] * 3
    store.close()


def test_the_pages_of_a_regency_list_every_employee_once_in_order(tmp_path, monkeypatch):
    """Each page builds only its own rows: walked page by page (two rows a page here, 200 in use), every
    employee of the roster appears exactly once, in NIP order, and the count and the pager say so. (That a
    page's row is the whole recap's row, figure by figure, is tests/test_recap.py's, on real punches.)"""
    import re

    from test_server_pages_attacks import PASSWORD, logged_in

    from sync.server import recap
    from sync.server.pages import recap as page
    from sync.wire import rosterbundle

    monkeypatch.setattr(page, "PAGE_SIZE", 2)
    app = make_app(str(tmp_path / "central.db"))
    accounts.add(app.store, "bk", "bkpsdm", PASSWORD, actor="test")
    nips = [f"19800101200501100{i}" for i in range(5)]
    people = [{"id": n, "name": f"Pegawai {i}", "uid": i + 1} for i, n in enumerate(reversed(nips))]
    app.store.publish_roster(1, rosterbundle.build_bundle(app.store.server_key(), 1, people,
                                                          {"workdays": ["mon", "tue", "wed", "thu", "fri"]}, []))
    whole = {e.employee: e for e in recap.build(app.store, MONTH).employees}
    with serve_in_thread(app) as url:
        bk = logged_in(url, "bk")
        seen, number = [], 0
        while True:
            number += 1
            html = bk.get(url + f"/recap?month={MONTH}&page={number}", timeout=30).text
            rows = re.findall(r'id="emp-([0-9]+)".*?class="fig days_absent">(?:<a [^>]*>)?([0-9]+)<', html, re.S)
            assert 0 < len(rows) <= 2 and f"5 pegawai · halaman {number}" in html
            seen += rows
            if 'rel="next"' not in html:
                break
        assert number == 3 and [n for n, _ in seen] == sorted(nips)
        assert all(int(absent) == whole[n].days_absent for n, absent in seen)
        one = bk.get(url + f"/recap?month={MONTH}&employee={nips[3]}", timeout=30).text
        assert re.findall(r'id="emp-([0-9]+)"', one) == [nips[3]] and "1 pegawai" in one
    app.store.close()
