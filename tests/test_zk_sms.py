"""ZKTeco short messages over port 4370 (issue 17): a client sends SMS and UDATA with the unmodified pyzk 0.9
(which has no helpers for them, so the raw commands go through its own command sender), and the employee sees
the message after their next punch, from the same store as the central server's messages. Without a comm key,
or for an unknown user, the write is refused and nothing reaches the screen."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

pytest.importorskip("zk", reason="pyzk (dev extra) is not installed: pip install -e .[dev]")
from zk import ZK  # noqa: E402

from sync.device.zk import codec  # noqa: E402
from sync.device.zk.server import serve_zk  # noqa: E402
from terminal import config  # noqa: E402
from terminal.log import punchlog  # noqa: E402
from terminal.punch import notices, roster  # noqa: E402
from terminal.punch.service import PunchService  # noqa: E402

KEY = 271828
BUDI, SARI = "199001012020011001", "198702022011012002"
WIB = dt.timezone(dt.timedelta(hours=7))


@pytest.fixture
def zk_terminal(tmp_path):
    state = tmp_path / "state"
    punchlog.init(state)
    roster.install(state, version=1, employees=[{"id": BUDI, "name": "Budi", "uid": 11, "pin_allowed": True},
                                                {"id": SARI, "name": "Sari", "uid": 12, "pin_allowed": True}])
    servers = []

    def start(comm_key: int):
        cfg = config.from_dict({"device": {"id": "opd-zk-01"}, "paths": {"state_dir": str(state)},
                                "zk": {"listen": "127.0.0.1:0", "comm_key": comm_key}}, "test")
        stop = threading.Event()
        servers.append((stop, serve_zk(cfg, cfg.state_dir, stop)))
        return cfg, servers[-1][1]

    yield start
    for stop, server in servers:
        stop.set()
        server.join(5)


def _send(conn, command: int, payload: bytes) -> bool:
    return conn._ZK__send_command(command, payload)["status"]  # pyzk's own sender: it has no SMS helpers


def _punch_notices(cfg, employee: str) -> list[str]:
    with punchlog.PunchLog(cfg.state_dir) as plog:
        return PunchService(cfg, plog).punch(employee, "pin").notices


def test_public_and_personal_short_messages_reach_the_employees_after_their_punch(zk_terminal):
    cfg, server = zk_terminal(KEY)
    now = dt.datetime.now(dt.UTC).astimezone(WIB).replace(tzinfo=None, microsecond=0) - dt.timedelta(minutes=5)
    conn = ZK("127.0.0.1", port=server.port, password=KEY, ommit_ping=True, timeout=10).connect()
    try:
        uids = {u.user_id: u.uid for u in conn.get_users()}
        assert _send(conn, codec.CMD_SMS_WRQ, codec.encode_sms(codec.SMS_PUBLIC, 1, 0, now, "Rapat pukul 09.00"))
        assert _send(conn, codec.CMD_SMS_WRQ, codec.encode_sms(codec.SMS_PERSONAL, 2, 120, now, "Budi ke ruang TU"))
        assert _send(conn, codec.CMD_UDATA_WRQ, uids[BUDI].to_bytes(2, "little") + (2).to_bytes(2, "little"))
        assert not _send(conn, codec.CMD_UDATA_WRQ, (999).to_bytes(2, "little") + (2).to_bytes(2, "little"))
        assert not _send(conn, codec.CMD_SMS_WRQ, b"\xfd\x03")  # truncated: an error reply, nothing stored
    finally:
        conn.disconnect()
    assert _punch_notices(cfg, BUDI) == ["Rapat pukul 09.00", "Budi ke ruang TU"]
    assert _punch_notices(cfg, SARI) == ["Rapat pukul 09.00"]
    with punchlog.PunchLog(cfg.state_dir) as plog:
        actions = [e["action"] for e in plog.audit_entries(50)]
    assert actions.count("zk-sms-set") == 2 and "zk-sms-user" in actions and "zk-sms-refused" in actions

    conn = ZK("127.0.0.1", port=server.port, password=KEY, ommit_ping=True, timeout=10).connect()
    try:
        assert _send(conn, codec.CMD_DELETE_SMS, (1).to_bytes(2, "little"))
    finally:
        conn.disconnect()
    with punchlog.PunchLog(cfg.state_dir) as plog:  # the store no longer holds the public message
        assert notices.local_messages(plog.conn, SARI, now.strftime("%Y-%m-%d %H:%M:%S")) == []


def test_without_a_comm_key_no_client_can_write_to_the_screens(zk_terminal):
    cfg, server = zk_terminal(0)
    now = dt.datetime.now(dt.UTC).astimezone(WIB).replace(tzinfo=None, microsecond=0)
    conn = ZK("127.0.0.1", port=server.port, password=0, ommit_ping=True, timeout=10).connect()
    try:
        assert not _send(conn, codec.CMD_SMS_WRQ, codec.encode_sms(codec.SMS_PUBLIC, 1, 0, now, "Libur besok!"))
    finally:
        conn.disconnect()
    assert _punch_notices(cfg, BUDI) == []
    with punchlog.PunchLog(cfg.state_dir) as plog:
        refused = [e for e in plog.audit_entries(50) if e["action"] == "zk-sms-refused"]
    assert refused and "comm key" in refused[0]["details"]["reason"]
