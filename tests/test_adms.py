"""The ADMS push client against the unmodified django-fingerprint-attendance 0.1.0 server (from PyPI), in a
Django project this test writes and serves with waitress on 127.0.0.1. Both sides run as real processes and
are killed (-9) and restarted; every punch must arrive exactly once, commands must reach the terminal."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("fingerprint_attendance", reason="django-fingerprint-attendance (dev extra) not installed")
pytest.importorskip("django")

from terminal.log import punchlog  # noqa: E402
from terminal.timing import clock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WIB = dt.timezone(dt.timedelta(hours=7))
BASE = dt.datetime(2026, 4, 6, 0, 30, 0, tzinfo=dt.UTC)  # 07:30 WIB
SN = "PRESENSI-ADMS-01"
STATES = {"masuk": 0, "pulang": 1, "istirahat": 2}
VERIFY = {"face": 15, "finger": 1, "pin": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DjangoAdms:
    """A Django project using fingerprint_attendance as its ADMS server."""

    def __init__(self, root: Path):
        from cryptography.fernet import Fernet

        self.root = root
        self.port = free_port()
        site = root / "adms_site"
        site.mkdir(parents=True)
        (site / "__init__.py").write_text("")
        (site / "settings.py").write_text(textwrap.dedent(f"""
            SECRET_KEY = "test-only"
            DEBUG = False
            ALLOWED_HOSTS = ["*"]
            INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework",
                              "fingerprint_attendance"]
            MIDDLEWARE = []
            DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "{root / 'adms.sqlite3'}",
                                       "OPTIONS": {{"timeout": 30}}}}}}
            ROOT_URLCONF = "adms_site.urls"
            USE_TZ = True
            TIME_ZONE = "Asia/Jakarta"
            DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
            FINGERPRINT_ATTENDANCE = {{
                "ADMS_REQUIRE_DEVICE_APPROVAL": False,
                "TEMPLATE_ENCRYPTION_KEYS": ["{Fernet.generate_key().decode()}"],
                "ADMS_DELAY": 1, "ADMS_ERROR_DELAY": 1, "ADMS_RATE_LIMIT": "100000/m",
            }}
            """))
        (site / "urls.py").write_text('from django.urls import include, path\n\n'
                                      'urlpatterns = [path("", include("fingerprint_attendance.urls"))]\n')
        (site / "wsgi.py").write_text('import os\n'
                                      'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adms_site.settings")\n'
                                      'from django.core.wsgi import get_wsgi_application\n'
                                      'application = get_wsgi_application()\n')
        self.env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}",
                    "DJANGO_SETTINGS_MODULE": "adms_site.settings"}
        out = subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput"], env=self.env, cwd=root,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{self.port}", "adms_site.wsgi:application"],
            env=self.env, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the Django ADMS server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def orm(self, code: str):
        """Run code against the server's database with the package's own models; returns `result`."""
        script = ("import django, json\ndjango.setup()\n"
                  "from fingerprint_attendance.models import Punch, Device, DeviceCommand\n"
                  + textwrap.dedent(code) + "\nprint(json.dumps(result, default=str))\n")
        out = subprocess.run([sys.executable, "-c", script], env=self.env, cwd=self.root, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    def query(self, sql: str) -> list[tuple]:
        """Read the server's database directly (cheap enough to poll; writes go through `orm`)."""
        import sqlite3

        with sqlite3.connect(f"file:{self.root / 'adms.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
            return [tuple(r) for r in db.execute(sql)]

    def punches(self) -> list[tuple]:
        return self.query("SELECT raw_pin, device_local_time, raw_state, verify_mode "
                          "FROM fingerprint_attendance_punch ORDER BY id")


class Terminal:
    def __init__(self, root: Path, url: str, timezone: str = "Asia/Jakarta", roster_authority: bool = False,
                 max_reply_bytes: int | None = None):
        self.state = root / "state"
        punchlog.init(self.state)
        self.cfg = root / "presensi.toml"
        self.zk_port = free_port()
        self.cfg.write_text(f'[device]\nid = "opd-adms"\ntimezone = "{timezone}"\n'
                            f'[paths]\nstate_dir = "{self.state}"\n'
                            '[camera]\nenabled = false\n[fingerprint]\nenabled = false\n'
                            '[web]\nlisten = "127.0.0.1:0"\n'
                            f'[zk]\nenabled = true\nlisten = "127.0.0.1:{self.zk_port}"\nserial_number = "{SN}"\n'
                            f'[adms]\nenabled = true\nurl = "{url}"\ndelay = 1.0\nerror_delay = 1.0\n'
                            f'batch_size = 3\nroster_authority = {str(roster_authority).lower()}\n'
                            + (f'max_reply_bytes = {max_reply_bytes}\n' if max_reply_bytes else ''))
        self.proc = None
        self.minute = 0

    def punch(self, n: int) -> None:
        with punchlog.PunchLog(self.state) as log:
            base = clock.read()
            for _ in range(n):
                i = self.minute
                self.minute += 1
                ns = int((BASE + dt.timedelta(minutes=7 * i)).timestamp()) * 10**9
                reading = clock.ClockReading(base.boot_id, base.monoraw_ns, base.boottime_ns, ns,
                                             base.timex_status, base.maxerror_us)
                log.append(f"1990010120201210{i % 4:02d}", ("face", "finger", "pin")[i % 3],
                           kind=("masuk", "pulang", "istirahat")[i % 3], reading=reading)

    def expected(self) -> list[tuple]:
        with punchlog.PunchLog(self.state) as log:
            out = []
            for r in log.records():
                local = dt.datetime.fromtimestamp(r["realtime_ns"] // 10**9, WIB)
                out.append((r["employee"], f"{local:%Y-%m-%d %H:%M:%S}", str(STATES[r["kind"]]),
                            VERIFY[r["method"]]))
            return out

    def start(self) -> None:
        """`presensi run` with camera and fingerprint disabled: the daemon serves ZK and pushes ADMS."""
        self.proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "-c", str(self.cfg)], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "presensi run exited at start"
            try:
                socket.create_connection(("127.0.0.1", self.zk_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("presensi run did not open the ZK port")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def pair(tmp_path, request):
    server = DjangoAdms(tmp_path / "server")
    terminal = Terminal(tmp_path / "terminal", server.url, **getattr(request, "param", {}))
    yield server, terminal
    terminal.kill()
    server.kill()


def test_times_follow_the_servers_timezone_option(tmp_path):
    """A WITA terminal pushing to a server set to WIB (TimeZone=7) sends WIB wall times, so the server's
    UTC is right; sending WITA times would shift every punch by an hour."""
    server = DjangoAdms(tmp_path / "server")
    terminal = Terminal(tmp_path / "terminal", server.url, timezone="Asia/Makassar")
    try:
        server.start()
        terminal.punch(2)
        terminal.start()
        assert wait_for(lambda: len(server.punches()) == 2)
        stored = server.query("SELECT raw_pin, punched_at FROM fingerprint_attendance_punch ORDER BY id")
    finally:
        terminal.kill()
        server.kill()
    with punchlog.PunchLog(terminal.state) as log:
        expected = [(r["employee"], dt.datetime.fromtimestamp(r["realtime_ns"] // 10**9, dt.UTC)
                     .strftime("%Y-%m-%d %H:%M:%S")) for r in log.records()]
    assert [(pin, at[:19]) for pin, at in stored] == expected


def wait_for(fn, timeout: float = 40.0, every: float = 1.0):
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(every)
        value = fn()
    return value


def test_every_punch_arrives_exactly_once_through_restarts(pair):
    server, terminal = pair
    server.start()
    terminal.punch(5)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) >= 5), "the first punches never arrived"

    terminal.kill()  # terminal dies; punches keep coming; it comes back
    terminal.punch(4)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) >= 9)

    server.kill()  # server dies; the terminal keeps its punches and retries
    terminal.punch(4)
    time.sleep(3)
    server.start()
    assert wait_for(lambda: len(server.punches()) >= 13)

    # a terminal that lost its own high-water mark (crash before it was written) resumes from the
    # server's ATTLOGStamp instead of sending everything again
    terminal.kill()
    import sqlite3

    with sqlite3.connect(terminal.state / "zkcompat.db") as db:
        assert db.execute("UPDATE state SET value='0' WHERE key LIKE 'adms_hwm:%'").rowcount == 1
    terminal.punch(2)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) >= 15)
    time.sleep(3)  # room for a wrong re-send to show up
    got = server.punches()
    assert sorted(got) == sorted(terminal.expected())
    assert len(got) == len(set(got)) == 15
    stamp = server.query(f"SELECT attlog_stamp FROM fingerprint_attendance_device WHERE serial_number='{SN}'")
    assert stamp == [("15",)]
    from conftest import presensi_json

    report = presensi_json("status", config=terminal.cfg)["zkteco"]
    assert report["adms"]["delivered_through_seq"] == 15 and report["adms"]["pending"] == 0


def test_a_stamp_of_a_re_initialised_punch_database_does_not_skip_the_new_logs_punches(pair):
    """The server keeps ATTLOGStamp per device, not per log: after the punch database was re-initialised
    (new log_id, seq from 1 again), its stamp of the old log must not be adopted, or the new log's first
    punches would never be delivered."""
    server, terminal = pair
    server.start()
    terminal.punch(5)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) == 5)
    assert wait_for(lambda: server.query(
        f"SELECT attlog_stamp FROM fingerprint_attendance_device WHERE serial_number='{SN}'") == [("5",)])
    terminal.kill()
    for f in terminal.state.glob(punchlog.DB_FILE + "*"):
        f.unlink()  # the operator re-initialised the punch database; zkcompat.db stays
    old = server.punches()
    punchlog.init(terminal.state)
    terminal.minute = 100  # other times, so the server's (PIN, time) dedupe cannot hide a missing punch
    terminal.punch(8)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) >= 13), \
        f"only {len(server.punches()) - 5} of the new log's 8 punches arrived"
    time.sleep(3)  # room for a wrong re-send to show up
    got = server.punches()
    assert sorted(got) == sorted(old + terminal.expected()) and len(got) == 13


@pytest.mark.parametrize("pair", [{"roster_authority": True}], indirect=True)
def test_commands_reach_the_terminal_and_clear_log_keeps_the_log(pair):
    """With [adms] roster_authority = true the operator made this ADMS server the source of people."""
    server, terminal = pair
    server.start()
    terminal.punch(3)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) == 3)
    queue(server, "add_user", {"pin": "199201012022011001", "name": "Siti Aminah"})
    queue(server, "add_user", {"pin": "199305052023021002", "name": "Budi Santoso"})
    queue(server, "delete_user", {"pin": "199305052023021002"})
    queue(server, "clear_logs", {})
    queue(server, "query_attlog", {"start": "2026-04-06 00:00:00", "end": "2026-04-06 23:59:59"})
    queue(server, "info", {})
    rows = wait_for(lambda: finished_commands(server, 6), timeout=60)
    assert rows == [["add_user", "succeeded", 0], ["add_user", "succeeded", 0], ["delete_user", "succeeded", 0],
                    ["clear_logs", "succeeded", 0], ["query_attlog", "succeeded", 0], ["info", "succeeded", 0]], \
        f"commands as the server sees them: {finished_commands(server, 0) or _all_commands(server)}"
    assert len(server.punches()) == 3  # the re-sent range was deduplicated by the server
    from zk import ZK  # the same process serves ZK pulls: the new user is there too

    conn = ZK("127.0.0.1", port=terminal.zk_port, ommit_ping=True, timeout=10).connect()
    zk_users = {u.user_id: u.name for u in conn.get_users()}
    conn.disconnect()
    assert zk_users.get("199201012022011001") == "Siti Aminah" and "199305052023021002" not in zk_users
    terminal.kill()

    from terminal.punch import roster

    with roster.Roster.open(terminal.state) as r:
        person = r.employee("199201012022011001")
        assert r.employee("199305052023021002") is None
    assert person is not None and person["name"] == "Siti Aminah" and 0 < person["uid"] < 65536
    with punchlog.PunchLog(terminal.state) as log:
        assert log.count() == 3 and log.verify() == []  # CLEAR LOG emptied nothing
        actions = [e["action"] for e in log.audit_entries()]
    assert "adms-clear-log" in actions and "adms-user-update" in actions and "adms-roster-command" in actions
    # punches after the CLEAR LOG still arrive, and the earlier ones are not re-sent
    terminal.punch(1)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) == 4)
    assert sorted(server.punches()) == sorted(terminal.expected())

    # SET OPTION DateTime: a time sample and an audit entry; no punch is rewritten, no clock is set
    queue(server, "set_time", {})
    rows = wait_for(lambda: finished_commands(server, 7))
    assert rows[-1] == ["set_time", "succeeded", 0]
    terminal.kill()
    with punchlog.PunchLog(terminal.state) as log:
        entries = [e for e in log.audit_entries() if e["action"] == "set-time-received"]
        assert len(entries) == 1 and entries[0]["details"]["source"] == "adms-datetime"
        assert abs(entries[0]["details"]["utc_ns"] - time.time_ns()) < 120 * 10**9
        assert log.count() == 4 and log.verify() == []

    # Both sides forget where delivery stood (terminal state and the server's stamp reset) after the time
    # sample re-anchored these punches: the re-send repeats the lines exactly as first sent, so the server's
    # dedupe holds and nothing is doubled.
    import sqlite3

    with sqlite3.connect(terminal.state / "zkcompat.db") as db:
        assert db.execute("UPDATE state SET value='0' WHERE key LIKE 'adms_hwm:%'").rowcount == 1
    server.orm(f"Device.objects.filter(serial_number='{SN}').update(attlog_stamp='')\nresult = None")
    before = server.punches()
    terminal.start()
    assert wait_for(lambda: server.query(
        f"SELECT attlog_stamp FROM fingerprint_attendance_device WHERE serial_number='{SN}'") == [("4",)])
    assert server.punches() == before

    # REBOOT: answered first, then the client stops (its supervisor starts it again)
    queue(server, "reboot", {})
    assert terminal.proc.wait(60) == 0
    assert finished_commands(server, 8)[-1] == ["reboot", "succeeded", 0]


def test_people_commands_without_roster_authority_are_acknowledged_audited_and_ignored(pair):
    """The attack: whoever answers as the ADMS server (plain HTTP) deletes an employee of the signed roster
    and adds a stranger. With the default roster_authority = false the server sees every command
    acknowledged (so it does not retry them for ever) and nothing changes on the terminal; the audit names
    each ignored command. SET OPTION DateTime is only a time claim."""
    from terminal.punch import roster
    from terminal.timing import timeline

    server, terminal = pair
    roster.install(terminal.state, version=1, employees=[
        {"id": "199001012020011001", "name": "Budi Santoso", "uid": 1, "pin_allowed": True}])
    server.start()
    terminal.punch(1)
    terminal.start()
    assert wait_for(lambda: len(server.punches()) == 1)
    queue(server, "delete_user", {"pin": "199001012020011001"})
    queue(server, "add_user", {"pin": "666", "name": "Penyusup"})
    queue(server, "set_time", {})
    rows = wait_for(lambda: finished_commands(server, 3), timeout=60)
    assert rows == [["delete_user", "succeeded", 0], ["add_user", "succeeded", 0], ["set_time", "succeeded", 0]]
    from zk import ZK

    conn = ZK("127.0.0.1", port=terminal.zk_port, ommit_ping=True, timeout=10).connect()
    zk_users = {u.user_id: u.name for u in conn.get_users()}
    conn.disconnect()
    assert zk_users.get("199001012020011001") == "Budi Santoso" and "666" not in zk_users
    terminal.kill()
    with roster.Roster.open(terminal.state) as r:
        assert r.employee("199001012020011001")["name"] == "Budi Santoso" and r.employee("666") is None
    with punchlog.PunchLog(terminal.state) as log:
        audit = log.audit_entries()
        ignored = [e["details"] for e in audit if e["action"] == "adms-roster-command-ignored"]
        assert sorted((d["command"], d["employee"]) for d in ignored) == [
            ("DATA DELETE USERINFO", "199001012020011001"), ("DATA UPDATE USERINFO", "666")]
        assert not [e for e in audit if e["action"] in ("adms-user-update", "adms-user-delete")]
        claim = [e["details"] for e in audit if e["action"] == "set-time-received"][0]
        assert claim["source"] == "adms-datetime" and claim["recorded_as"] == "claim"
        assert timeline.now(log.conn)["basis"] != "adms-datetime"


def queue(server: DjangoAdms, command: str, payload: dict) -> None:
    server.orm(f"""
        from fingerprint_attendance.services.commands import queue_command
        queue_command(Device.objects.get(serial_number='{SN}'), '{command}', {payload!r})
        result = None
        """)


def _all_commands(server: DjangoAdms) -> list:
    return [list(r) for r in server.query(
        "SELECT command_type, status, return_code FROM fingerprint_attendance_devicecommand ORDER BY id")]


def finished_commands(server: DjangoAdms, n: int):
    rows = [list(r) for r in server.query(
        "SELECT command_type, status, return_code FROM fingerprint_attendance_devicecommand ORDER BY id")]
    done = len(rows) == n and all(r[1] in ("succeeded", "failed") for r in rows)
    return rows if done else None


class HostileAdms:
    """An ADMS server (real HTTP on 127.0.0.1) that answers getrequest with a 40 MB reply once told to:
    with Content-Length on odd requests, chunked (no length) on even ones, as a broken or spoofed server
    would."""

    HUGE = 40 * 2**20

    def __init__(self):
        import http.server
        import threading

        self.huge = threading.Event()
        self.polls = {"small": 0, "huge": 0}
        outer = self
        chunk = b"C:1:INFO\n" * 7000  # ~63 KiB, sent again and again

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _small(self, text: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def do_GET(self):
                if "/iclock/getrequest" not in self.path:
                    return self._small(b"GET OPTION FROM: x\nDelay=1\nErrorDelay=1\nRealtime=1\n")
                if not outer.huge.is_set():
                    outer.polls["small"] += 1
                    return self._small(b"OK")
                outer.polls["huge"] += 1
                chunked = outer.polls["huge"] % 2 == 0
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(outer.HUGE))
                self.end_headers()
                try:
                    for _ in range(outer.HUGE // len(chunk)):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what it should do
                self.close_connection = True

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                self._small(b"OK")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def test_a_40_mb_reply_is_cut_off_and_memory_stays_flat(tmp_path):
    """The ADMS client as its own process (python -m sync.device.adms) against a server that answers with
    40 MB: before, the daemon grew from 102 MB to 289 MB. Now each reply is read as a stream and cut at
    [adms] max_reply_bytes (1 MiB); the peak RSS does not move, and the client keeps polling."""
    server = HostileAdms()
    terminal = Terminal(tmp_path / "terminal", server.url)
    terminal.punch(2)
    proc = subprocess.Popen([sys.executable, "-m", "sync.device.adms", "-c", str(terminal.cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: server.polls["small"] >= 3, timeout=60, every=0.1), "the client never polled"
        before = _peak_rss_kb(proc.pid)
        server.huge.set()
        assert wait_for(lambda: server.polls["huge"] >= 4, timeout=60, every=0.1), "the client stopped polling"
        assert proc.poll() is None
        after = _peak_rss_kb(proc.pid)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        server.stop()
    print(f"\nADMS client peak RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after "
          f"{server.polls['huge']} replies of 40 MiB")
    assert after - before < 8 * 1024, (before, after)
    assert "max_reply_bytes" in err  # the operator is told why (logged as a warning)
