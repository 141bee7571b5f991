"""The ZK port-4370 server against the unmodified pyzk 0.9 client (TCP and UDP, with and without comm key),
the legacy PHP client's direct commands, live capture, clear/set-time semantics, and fuzzed packets."""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import readline

zk_lib = pytest.importorskip("zk", reason="pyzk (dev extra) is not installed: pip install -e .[dev]")
from zk import ZK  # noqa: E402
from zk.exception import ZKErrorResponse  # noqa: E402

from sync.device.zk import codec  # noqa: E402
from sync.device.zk.server import serve_zk  # noqa: E402
from terminal import config  # noqa: E402
from terminal.log import punchlog  # noqa: E402
from terminal.timing import clock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import zk_bench  # noqa: E402

WIB = dt.timezone(dt.timedelta(hours=7))
BASE = dt.datetime(2026, 3, 2, 7, 15, 3, tzinfo=dt.UTC)  # a Monday, 14:15:03 WIB
PUNCHES = [  # employee, method, kind, minutes after BASE
    ("198501012010011001", "face", "masuk", 0),
    ("198702022011012002", "finger", "masuk", 3),
    ("3", "pin", "istirahat", 61),
    ("198501012010011001", "face", "pulang", 540),
    ("198702022011012002", "finger", "lembur_pulang", 777),
]
STATES = {"masuk": 0, "pulang": 1, "istirahat": 2, "lembur_pulang": 5}
VERIFY = {"face": 15, "finger": 1, "pin": 3}


def make_cfg(tmp: Path, comm_key: int = 0, **zk) -> config.Config:
    return config.from_dict({"device": {"id": "opd-test-01", "name": "Dinas Uji"},
                             "paths": {"state_dir": str(tmp / "state")},
                             "zk": {"listen": "127.0.0.1:0", "comm_key": comm_key, **zk}}, "test")


def append_punches(state_dir: Path, punches=PUNCHES) -> list[dict]:
    with punchlog.PunchLog(state_dir) as log:
        base = clock.read()
        out = []
        for emp, method, kind, minutes in punches:
            ns = int((BASE + dt.timedelta(minutes=minutes)).timestamp()) * 10**9
            reading = clock.ClockReading(base.boot_id, base.monoraw_ns + minutes, base.boottime_ns, ns,
                                         base.timex_status, base.maxerror_us)
            out.append(log.append(emp, method, kind=kind, reading=reading))
        return out


@pytest.fixture
def terminal(tmp_path):
    punchlog.init(tmp_path / "state")
    append_punches(tmp_path / "state")
    started = []

    def start(comm_key: int = 0, **zk):
        cfg = make_cfg(tmp_path, comm_key, **zk)
        stop = threading.Event()
        server = serve_zk(cfg, cfg.state_dir, stop)
        started.append((stop, server))
        return cfg, server

    yield start
    for stop, server in started:
        stop.set()
        server.join(5)


def connect(port: int, udp: bool, key: int = 0):
    return ZK("127.0.0.1", port=port, password=key, ommit_ping=True, force_udp=udp, timeout=10).connect()


def expected_attendance(punches=PUNCHES):
    return [(emp, (BASE + dt.timedelta(minutes=m)).astimezone(WIB).replace(tzinfo=None), VERIFY[meth],
             STATES[kind]) for emp, meth, kind, m in punches]


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
@pytest.mark.parametrize("key", [0, 271828], ids=["no-key", "comm-key"])
def test_pyzk_reads_users_and_punches_exactly(terminal, udp, key):
    cfg, server = terminal(comm_key=key)
    conn = connect(server.port, udp, key)
    try:
        users = conn.get_users()
        records = conn.get_attendance()
        assert conn.get_serialnumber() == "opd-test-01"
        assert conn.get_device_name() == "Dinas Uji"
        assert conn.get_firmware_version().startswith("Ver 6.60")
        assert conn.get_platform() and conn.get_mac()
        conn.read_sizes()
        assert (conn.users, conn.records) == (3, 5)
        assert conn.disable_device() and conn.enable_device() and conn.refresh_data() and conn.free_data()
    finally:
        conn.disconnect()
    assert sorted(u.user_id for u in users) == sorted({p[0] for p in PUNCHES})
    assert len({u.uid for u in users}) == 3 and all(0 < u.uid < 65535 for u in users)
    assert {u.user_id: u.uid for u in users}["3"] == 3  # a numeric id that fits is its own uid
    got = [(r.user_id, r.timestamp, r.status, r.punch) for r in records]
    assert got == expected_attendance()
    uid_of = {u.user_id: u.uid for u in users}
    assert all(r.uid == uid_of[r.user_id] for r in records)
    # the same uids on the next connection (stable, not per-session)
    conn = connect(server.port, udp, key)
    assert {u.user_id: u.uid for u in conn.get_users()} == uid_of
    conn.disconnect()


def test_users_come_from_the_roster_when_there_is_one(terminal, tmp_path):
    from terminal.punch import roster
    roster.install(tmp_path / "state", version=3, employees=[
        {"id": "198501012010011001", "name": "Dewi Lestari", "uid": 501, "pin_allowed": True},
        {"id": "199912312025011009", "name": "Agus Salim", "uid": 502, "pin_allowed": False},
    ])
    _, server = terminal()
    conn = connect(server.port, False)
    users = {u.user_id: (u.uid, u.name) for u in conn.get_users()}
    records = conn.get_attendance()
    conn.disconnect()
    assert users["198501012010011001"] == (501, "Dewi Lestari")
    assert users["199912312025011009"] == (502, "Agus Salim")  # enrolled, no punch yet: still a user
    # employees who punched but are not in the roster keep a uid of their own, distinct from the roster's
    others = {k: v[0] for k, v in users.items() if k in ("198702022011012002", "3")}
    assert len(others) == 2 and not set(others.values()) & {501, 502}
    assert [r.uid for r in records if r.user_id == "198501012010011001"] == [501, 501]


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_wrong_comm_key_is_refused(terminal, udp):
    _, server = terminal(comm_key=4242)
    with pytest.raises(ZKErrorResponse, match="Unauthenticated"):
        connect(server.port, udp, 4243)
    with pytest.raises(ZKErrorResponse, match="Unauthenticated"):
        connect(server.port, udp, 0)


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_large_download_through_buffered_chunks(tmp_path, udp):
    """Enough records for many 64 KiB (TCP) / 16 KiB (UDP) chunks; bench/zk_bench.py does 100,000."""
    n = 12_000
    punchlog.init(tmp_path / "state")
    zk_bench.fill_log(tmp_path / "state", n, employees=250)
    cfg = make_cfg(tmp_path)
    stop = threading.Event()
    server = serve_zk(cfg, cfg.state_dir, stop)
    try:
        conn = connect(server.port, udp)
        records = conn.get_attendance()
        users = conn.get_users()
        conn.disconnect()
        if udp:  # the PHP client's direct command 13 streams the same records as 1024-byte datagrams
            legacy = RawUdp(server.port)
            legacy.connect()
            direct = legacy.read_direct(codec.CMD_ATTLOG_RRQ)
    finally:
        stop.set()
        server.join(5)
    assert len(records) == n and len(users) == 250
    if udp:
        assert len(direct) == 4 + 40 * n
        last = struct.unpack_from("<H24sBIB", direct, 4 + 40 * (n - 1))
        assert (last[1].rstrip(b"\x00").decode(), codec.decode_time(last[3])) == (
            records[-1].user_id, records[-1].timestamp)
    states = {k: v for k, v in cfg.zk.state_map.items()}
    for i in (0, 1, 4321, n - 1):
        emp, ns, kind, method = zk_bench.expected_punch(i, 250)
        local = dt.datetime.fromtimestamp(ns // 10**9, WIB).replace(tzinfo=None)
        r = records[i]
        assert (r.user_id, r.timestamp, r.status, r.punch) == (
            emp, local, VERIFY[method], states.get(kind, cfg.zk.unknown_state))


def _write_cfg_file(cfg) -> Path:
    """The same settings as a presensi.toml, for the real CLI."""
    path = cfg.state_dir.parent / "presensi.toml"
    path.write_text(f'[device]\nid = "opd-test-01"\n[paths]\nstate_dir = "{cfg.state_dir}"\n'
                    f'[zk]\ncomm_key = {cfg.zk.comm_key}\ntrust_set_time = {str(cfg.zk.trust_set_time).lower()}\n')
    return path


def test_set_time_with_the_default_key_is_only_an_audited_claim(terminal):
    """The attack: a laptop on the LAN with pyzk and the default comm key 0 sets the clock 2 h back. The
    terminal answers OK (as a ZK device would), audits it, and nothing follows: not a time sample, the time
    stays "not verified", no punch moves, kinds and lateness keep the terminal's own time."""
    cfg, server = terminal()
    from conftest import presensi, presensi_json

    from terminal.timing import timeline

    with punchlog.PunchLog(cfg.state_dir) as log:
        raw_before = list(log.records())
        times_before = timeline.annotate(log.conn, raw_before)
    status_before = presensi_json("time", "status", config=_write_cfg_file(cfg))
    served_before = [r.timestamp for r in _download(server.port)]
    shifted = (dt.datetime.now(WIB) - dt.timedelta(hours=2)).replace(tzinfo=None, microsecond=0)
    conn = connect(server.port, False)
    try:
        wall0 = time.time()
        conn.set_time(shifted)
        assert abs(time.time() - wall0) < 5  # the system clock was not set
        assert abs((conn.get_time() - dt.datetime.now(WIB).replace(tzinfo=None)).total_seconds()) < 5
    finally:
        conn.disconnect()
    with punchlog.PunchLog(cfg.state_dir) as log:
        entries = [e for e in log.audit_entries() if e["action"] == "set-time-received"]
        assert len(entries) == 1
        details = entries[0]["details"]
        assert details["peer_local_time"] == shifted.isoformat() and entries[0]["actor"] == "zk:127.0.0.1"
        assert details["recorded_as"] == "claim" and details["recorded_as_sample"] is False
        assert list(log.records()) == raw_before and log.verify() == []  # no punch rewritten
        assert timeline.annotate(log.conn, raw_before) == times_before  # nor re-timed
    report = presensi_json("time", "status", config=_write_cfg_file(cfg))
    assert report["now"]["verified"] is False and report["now"]["basis"] != "zk-settime"
    assert report["now"]["state"] == status_before["now"]["state"]
    assert report["time_claims"] == 1
    text = presensi("time", "status", config=_write_cfg_file(cfg)).stdout
    assert "1 time claim(s) from ZK SetTime" in text and "basis zk-settime" not in text
    assert [r.timestamp for r in _download(server.port)] == served_before  # ZK serves the same times


def test_set_time_counts_only_when_the_operator_trusts_keyed_clients(terminal):
    """[zk] trust_set_time = true with a comm key: SetTime from a client that knows the key is a sample
    and re-anchors punches; the config check refuses trust_set_time with comm_key 0."""
    with pytest.raises(config.ConfigError, match="trust_set_time = true needs a comm_key"):
        make_cfg(Path("/tmp/unused"), 0, trust_set_time=True)
    cfg, server = terminal(comm_key=271828, trust_set_time=True)
    from terminal.timing import timeline

    conn = connect(server.port, False, key=271828)
    try:
        conn.set_time(dt.datetime.now(WIB).replace(tzinfo=None, microsecond=0))
    finally:
        conn.disconnect()
    with punchlog.PunchLog(cfg.state_dir) as log:
        details = [e for e in log.audit_entries() if e["action"] == "set-time-received"][0]["details"]
        assert details["recorded_as"] == "sample" and details["trusted_by"] == "[zk] trust_set_time"
        now = timeline.now(log.conn)
        assert now["verified"] is True and now["basis"] == "zk-settime"
        assert log.verify() == []


def _download(port: int, udp: bool = False):
    conn = connect(port, udp)
    try:
        return conn.get_attendance()
    finally:
        conn.disconnect()


def test_clear_attendance_marks_collected_and_keeps_the_log(terminal):
    cfg, server = terminal()
    conn = connect(server.port, False)
    assert len(conn.get_attendance()) == 5
    assert conn.clear_attendance()
    assert conn.get_attendance() == []
    conn.disconnect()
    append_punches(cfg.state_dir, [("777", "pin", "pulang", 900)])
    after = _download(server.port)
    assert [(r.user_id, r.punch) for r in after] == [("777", 1)]  # only what came after the clear
    with punchlog.PunchLog(cfg.state_dir) as log:
        assert log.count() == 6 and log.verify() == []
        assert any(e["action"] == "zk-clear-attendance" for e in log.audit_entries())


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_live_capture_reports_new_punches(terminal, udp):
    cfg, server = terminal()
    conn = connect(server.port, udp)
    events = []
    listening = threading.Event()  # pyzk yields None after its first quiet second: the capture is registered

    def capture():
        for att in conn.live_capture(new_timeout=1):
            listening.set()
            if att is not None:
                events.append(att)
            if events or time.monotonic() > deadline:
                conn.end_live_capture = True

    deadline = time.monotonic() + 30
    t = threading.Thread(target=capture)
    t.start()
    assert listening.wait(30), "live capture never started"
    append_punches(cfg.state_dir, [("198501012010011001", "finger", "pulang", 1000)])
    t.join(20)
    conn.disconnect()
    assert [(e.user_id, e.status, e.punch) for e in events] == [("198501012010011001", 1, 1)]
    local = (BASE + dt.timedelta(minutes=1000)).astimezone(WIB).replace(tzinfo=None)
    assert events[0].timestamp == local


# -- legacy PHP ZKLibrary: UDP, direct commands 13 and 9 ------------------------------------------------

class RawUdp:
    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.addr = ("127.0.0.1", port)
        self.session = 0
        self.reply = 0

    def send(self, command: int, payload: bytes = b"", session: int | None = None, checksum: int | None = None):
        self.reply = (self.reply + 1) % 65535
        pkt = codec.build_packet(command, self.session if session is None else session, self.reply, payload)
        if checksum is not None:
            pkt = pkt[:2] + struct.pack("<H", checksum) + pkt[4:]
        self.sock.sendto(pkt, self.addr)

    def recv(self) -> codec.Packet:
        return codec.parse_packet(self.sock.recv(2048))

    def connect(self):
        self.send(codec.CMD_CONNECT)
        reply = self.recv()
        self.session = reply.session
        return reply

    def read_direct(self, command: int, payload: bytes = b"") -> bytes:
        self.send(command, payload)
        prep = self.recv()
        assert prep.command == codec.CMD_PREPARE_DATA
        size = struct.unpack("<I", prep.payload[:4])[0]
        parts = []
        while True:
            pkt = self.recv()
            if pkt.command == codec.CMD_ACK_OK:
                break
            assert pkt.command == codec.CMD_DATA and len(pkt.payload) <= 1024
            parts.append(pkt.payload)
        data = b"".join(parts)
        assert len(data) == size
        return data


def test_php_zklibrary_direct_commands(terminal):
    _, server = terminal()
    client = RawUdp(server.port)
    assert client.connect().command == codec.CMD_ACK_OK
    client.send(codec.CMD_OPTIONS_RRQ, b"~SerialNumber")  # ZKLibrary sends option names without NUL
    assert client.recv().payload.rstrip(b"\x00") == b"~SerialNumber=opd-test-01"
    att = client.read_direct(codec.CMD_ATTLOG_RRQ)
    users = client.read_direct(codec.CMD_USERTEMP_RRQ, b"\x05")
    assert struct.unpack("<I", att[:4])[0] == 5 * 40 and struct.unpack("<I", users[:4])[0] == 3 * 72
    got = []
    for i in range(5):
        uid, user_id, verify, t, state = struct.unpack_from("<H24sBIB", att, 4 + 40 * i)
        got.append((user_id.rstrip(b"\x00").decode(), codec.decode_time(t), verify, state))
    assert got == expected_attendance()


def test_udp_sessions_are_bounded_and_idle_ones_give_way(terminal):
    """UDP clients that never disconnect cannot lock others out: when all slots are taken, the longest-idle
    session (idle at least 5 s) is dropped for a new one; busy sessions are never dropped."""
    _, server = terminal(max_sessions=2, session_idle_seconds=600)
    a, b, c = RawUdp(server.port), RawUdp(server.port), RawUdp(server.port)
    assert a.connect().command == codec.CMD_ACK_OK and b.connect().command == codec.CMD_ACK_OK
    assert c.connect().command == codec.CMD_ACK_ERROR  # both others active just now
    time.sleep(5.5)
    b.send(codec.CMD_GET_TIME)
    assert b.recv().command == codec.CMD_ACK_OK  # b stays busy; a is the idle one
    assert c.connect().command == codec.CMD_ACK_OK
    a.send(codec.CMD_GET_TIME)
    assert a.recv().command == codec.CMD_ACK_UNAUTH  # a's session was given to c


# -- fuzzing: a separate server process, so a crash or memory growth is visible -------------------------

def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


@pytest.fixture
def server_process(tmp_path):
    punchlog.init(tmp_path / "state")
    append_punches(tmp_path / "state")
    cfg_path = tmp_path / "presensi.toml"
    cfg_path.write_text(f'[device]\nid = "fuzz-01"\n[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                        '[zk]\nlisten = "127.0.0.1:0"\nsession_idle_seconds = 1.5\nmax_sessions = 8\n')
    proc = subprocess.Popen([sys.executable, "-m", "sync.device.zk.server", "-c", str(cfg_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = readline(proc.stdout, 60)
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"the ZK server did not start: {line!r} {proc.communicate(timeout=10)[1]}")
    port = int(line.rsplit(":", 1)[1])
    yield proc, port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _tcp_exchange(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """Send raw bytes; return what came back until the server closed or went quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(wait)
    out = b""
    try:
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        s.close()
    return out


def _tcp_frames(data: bytes) -> list[codec.Packet]:
    frames = []
    while len(data) >= 16:
        n = codec.tcp_length(data[:8])
        frames.append(codec.parse_packet(data[8:8 + n]))
        data = data[8 + n:]
    return frames


def test_fuzzed_packets_get_error_replies_or_closed_connections(server_process):
    proc, port = server_process
    rng = random.Random(8)
    # wrong TCP magic or absurd lengths: connection closed without a reply
    assert _tcp_exchange(port, b"GET / HTTP/1.0\r\n\r\n") == b""
    assert _tcp_exchange(port, codec.TCP_MAGIC + struct.pack("<I", 2**31) + b"x" * 64) == b""
    assert _tcp_exchange(port, codec.TCP_MAGIC + struct.pack("<I", 3) + b"abc") == b""
    # a command without a session, then a wrong checksum, then an oversized chunk read: error replies
    unknown = codec.tcp_wrap(codec.build_packet(codec.CMD_GET_TIME, 999, 5))
    assert [p.command for p in _tcp_frames(_tcp_exchange(port, unknown, 1))] == [codec.CMD_ACK_UNAUTH]
    udp = RawUdp(port)
    udp.connect()
    udp.send(codec.CMD_GET_TIME, checksum=1234)
    assert udp.recv().command == codec.CMD_ACK_ERROR
    udp.send(codec.CMD_READ_BUFFER, struct.pack("<ii", 0, 2**30))
    assert udp.recv().command == codec.CMD_ACK_ERROR
    udp.send(codec.CMD_PREPARE_BUFFER, struct.pack("<bhii", 1, 13, 0, 0))
    assert udp.recv().command == codec.CMD_DATA  # 5 records: the small form
    udp.send(codec.CMD_READ_BUFFER, struct.pack("<ii", -5, 100))
    assert udp.recv().command == codec.CMD_ACK_ERROR
    udp.send(codec.CMD_SET_TIME, struct.pack("<I", ((26 * 12 + 1) * 31 + 30) * 86400))  # 31 February
    assert udp.recv().command == codec.CMD_ACK_ERROR
    udp.send(codec.CMD_SET_TIME, struct.pack("<I", 0xFFFFFFFF))  # year 2136: ZK years are 2 digits
    assert udp.recv().command == codec.CMD_ACK_ERROR
    udp.send(4321)
    assert udp.recv().command == codec.CMD_ACK_UNKNOWN
    udp.send(codec.CMD_GET_TIME, session=udp.session ^ 0x5555)
    assert udp.recv().command == codec.CMD_ACK_UNAUTH

    rss0 = _rss_kb(proc.pid)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(3000):  # random datagrams: headers, commands, sessions, payload sizes
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 1500))
        elif kind == 1:
            data = codec.build_packet(rng.choice([11, 13, 50, 201, 202, 1503, 1504, 9, 500, rng.randrange(65536)]),
                                      udp.session, rng.randrange(65536), rng.randbytes(rng.randrange(0, 40)))
        else:
            data = struct.pack("<4H", rng.randrange(65536), rng.randrange(65536), udp.session, 0) + rng.randbytes(8)
        raw.sendto(data, ("127.0.0.1", port))
    for _ in range(60):  # random TCP streams, many of them cut short (half-open)
        payload = codec.TCP_MAGIC + struct.pack("<I", rng.randrange(0, 200)) + rng.randbytes(rng.randrange(0, 300))
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(payload if rng.random() < 0.5 else rng.randbytes(50))
        s.close()
    half_open = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
    for s in half_open:
        s.sendall(codec.TCP_MAGIC + struct.pack("<I", 100) + b"\x00" * 10)  # promises 100 bytes, sends 18
    for s in half_open:  # idle limit 1.5 s: the server closes them (each recv waits up to its 10 s timeout)
        try:
            assert s.recv(100) == b""  # closed by the server
        except ConnectionResetError:
            pass  # closed by the server with our bytes unread: also closed
        s.close()
    assert proc.poll() is None, proc.stderr.read()
    # still serving, and memory did not grow with the garbage
    conn = connect(port, False)
    assert len(conn.get_attendance()) == 5
    conn.disconnect()
    conn = connect(port, True)
    assert len(conn.get_users()) == 3
    conn.disconnect()
    assert _rss_kb(proc.pid) - rss0 < 8 * 1024, "server memory grew by more than 8 MiB under fuzzing"


def test_config_mappings_are_validated(tmp_path):
    from sync.device.zk.data import check_mappings

    cfg = config.from_dict({"device": {"id": "x"}, "paths": {"state_dir": str(tmp_path)},
                            "zk": {"state_map": {"masuk": 300}}}, "p.toml")
    with pytest.raises(config.ConfigError, match=r"\[zk\] state_map.masuk"):
        check_mappings(cfg)


if os.environ.get("ZK_TEST_DEBUG"):
    import logging

    logging.basicConfig(level=logging.DEBUG)


def test_pyzk_sees_the_derived_kind_after_re_anchoring(tmp_path):
    """A punch recorded on a wrong clock (pulang by that clock) and re-anchored to its true time (masuk):
    a ZK client downloading afterwards gets the state of the corrected kind, at the corrected time."""
    from terminal.punch.service import PunchService, recomputer
    from terminal.timing import timeline

    state = tmp_path / "state"
    punchlog.init(state)
    cfg = config.from_dict({"device": {"id": "opd-test-01"}, "paths": {"state_dir": str(state)},
                            "zk": {"listen": "127.0.0.1:0"},
                            "schedule": {"workdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                         "holidays": [], "default": {"masuk": "07:00-07:30-10:00",
                                                                     "pulang": "13:00-16:00-23:00"}}}, "test")
    true_utc = dt.datetime(2026, 12, 2, 0, 42, tzinfo=dt.UTC)  # 07:42 WIB: masuk
    wrong = clock.ClockReading("boot-zk", 10**12, 10**12, int((true_utc + dt.timedelta(hours=8)).timestamp()) * 10**9,
                               clock.TIME_ERROR, 16_000_000)  # the clock says 15:42 WIB: pulang
    with punchlog.PunchLog(state) as log:
        assert PunchService(cfg, log).punch("3", "pin", reading=wrong).kind == "pulang"
        timeline.record_sample(log.conn, source="manual", reading=wrong, utc_ns=int(true_utc.timestamp()) * 10**9,
                               uncertainty_ns=10**7)
        recomputer(cfg)(log.conn)
    stop = threading.Event()
    server = serve_zk(cfg, cfg.state_dir, stop)
    try:
        conn = connect(server.port, False)
        records = conn.get_attendance()
        conn.disconnect()
    finally:
        stop.set()
        server.join(5)
    assert [(r.user_id, r.timestamp, r.punch) for r in records] == [
        ("3", true_utc.astimezone(WIB).replace(tzinfo=None), STATES["masuk"])]
