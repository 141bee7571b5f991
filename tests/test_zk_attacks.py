"""Port 4370 attacked from the office LAN, with real sockets on loopback: the attacker at 127.0.0.2 (and
127.0.0.3-5), the central server's unmodified pyzk 0.9 client at 127.0.0.1. Comm-key guessing is slowed
to a measured rate, and idle or unauthenticated connections never lock the central server out."""

from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("zk", reason="pyzk (dev extra) is not installed: pip install -e .[dev]")
import test_zk  # noqa: E402
from test_zk import PUNCHES, connect  # noqa: E402
from zk.base import make_commkey  # noqa: E402  (the attacker uses pyzk's own key encoding)

from sync.device.zk import codec, guard  # noqa: E402

terminal = test_zk.terminal  # the fixture: a punch log with PUNCHES and a ZK server on 127.0.0.1

KEY = 271828
ATTACKER = "127.0.0.2"


class RawTcp:
    """A ZK client that speaks frame by frame, from a chosen source address."""

    def __init__(self, port: int, source: str = ATTACKER, timeout: float = 40.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.session, self.reply = 0, 0

    def send(self, command: int, payload: bytes = b"") -> None:
        self.reply = (self.reply + 1) % 65535
        self.sock.sendall(codec.tcp_wrap(codec.build_packet(command, self.session, self.reply, payload)))

    def recv(self) -> codec.Packet | None:
        """The next frame, or None when the server closed the connection."""
        head = self._exact(8)
        if head is None:
            return None
        body = self._exact(codec.tcp_length(head))
        return None if body is None else codec.parse_packet(body)

    def _exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def connect(self) -> codec.Packet | None:
        self.send(codec.CMD_CONNECT)
        reply = self.recv()
        if reply is not None:
            self.session = reply.session
        return reply

    def auth(self, key: int) -> codec.Packet | None:
        self.send(codec.CMD_AUTH, make_commkey(key, self.session))
        return self.recv()

    def closed_within(self, seconds: float) -> bool:
        """True when the server closes the connection within `seconds` (replies before that are read)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if self.sock.recv(65536) == b"":
                    return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


def test_comm_key_guessing_is_slowed_to_a_measured_rate(terminal, caplog):
    """One attacker tries wrong keys as fast as the server answers, reconnecting whenever it is cut off.
    Before: ~10,000 keys/s in one session (all 10^6 in ~100 s). Now: at most 10/s, backing off
    exponentially; the central server at another address connects at once, and the right key from the
    guessing address still works, only late."""
    _, server = terminal(comm_key=KEY)
    tries, replies, start = 0, [], time.monotonic()
    attacker = None
    while time.monotonic() - start < 4.0:
        if attacker is None:
            attacker = RawTcp(server.port)
            assert attacker.connect().command == codec.CMD_ACK_UNAUTH
        reply = attacker.auth(100000 + tries)  # never the right key
        tries += 1
        if reply is None:  # the server closed a session that guessed too often: reconnect, as an attacker would
            attacker.close()
            attacker = None
            continue
        assert reply.command == codec.CMD_ACK_UNAUTH
        replies.append(time.monotonic() - start)
    elapsed = time.monotonic() - start
    rate = len(replies) / elapsed
    print(f"\ncomm-key guessing: {len(replies)} keys checked in {elapsed:.1f} s = {rate:.1f} tries/s")
    assert rate <= 10.0
    assert len(replies) <= guard.FREE_FAILURES + 6  # the back-off doubled: 0.1 0.1 0.1 0.2 0.4 0.8 1.6 ...
    later = [b - a for a, b in zip(replies, replies[1:], strict=False)][guard.FREE_FAILURES:]
    assert later and all(gap >= 0.15 for gap in later) and later[-1] > later[0] * 3  # exponential
    if attacker is not None:
        attacker.close()

    t0 = time.monotonic()
    legit = connect(server.port, False, KEY)  # pyzk from 127.0.0.1: not slowed by 127.0.0.2's guessing
    assert len(legit.get_attendance()) == len(PUNCHES)
    legit.disconnect()
    assert time.monotonic() - t0 < 3.0

    late = RawTcp(server.port)  # the right key from the guessing address: waits its turn, then works
    late.connect()
    t0 = time.monotonic()
    assert late.auth(KEY).command == codec.CMD_ACK_OK
    waited = time.monotonic() - t0
    late.close()
    print(f"right key from the guessing address answered after {waited:.1f} s")
    assert waited > 0.5
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "wrong comm key" in logged and str(KEY) not in logged and "100000" not in logged
    assert logged.count("wrong comm key") <= 4  # 1, 2, 4, 8 failures: guessing cannot fill the journal


def test_the_comm_key_is_redacted_in_status_and_config_check(tmp_path):
    """`presensi status` and `presensi config check` (text and JSON) say a key is set, never which."""
    from conftest import presensi

    cfg = tmp_path / "presensi.toml"
    cfg.write_text(f'[device]\nid = "zk-01"\n[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[zk]\nenabled = true\ncomm_key = {KEY}\n[camera]\nenabled = false\n'
                   '[fingerprint]\nenabled = false\n')
    assert presensi("init", config=cfg).returncode == 0
    outputs = [presensi(*args, config=cfg) for args in (("status",), ("status", "--json"),
                                                        ("config", "check"), ("config", "check", "--json"))]
    assert all(o.returncode in (0, 1) for o in outputs), [o.stderr for o in outputs]
    assert not [o for o in outputs if str(KEY) in o.stdout + o.stderr]
    assert '"comm_key": "<redacted>"' in outputs[3].stdout


def _guess_over_tcp(port: int, failures: int) -> float:
    """`failures` wrong keys from ATTACKER over TCP (each checked in its turn); returns when the last
    answer came, after which the address backs off for guard.backoff(failures)."""
    client, answered = None, 0.0
    for i in range(failures):
        if client is None:
            client = RawTcp(port)
            client.connect()
        reply = client.auth(KEY + 1 + i)
        answered = time.monotonic()
        assert reply is None or reply.command == codec.CMD_ACK_UNAUTH
        if reply is None or (i + 1) % 5 == 0:  # the server closes a session after 5 wrong keys
            client.close()
            client = None
    if client is not None:
        client.close()
    return answered


def test_udp_guessing_is_refused_unchecked_while_the_address_backs_off(terminal):
    """UDP is served by one thread for everyone, so it cannot make a client wait its turn: while the
    address backs off (built up here over TCP: 8 wrong keys, 3.2 s), even the right key is answered
    ACK_UNAUTH unchecked. The central server at another address is not affected."""
    _, server = terminal(comm_key=KEY)
    answered = _guess_over_tcp(server.port, 8)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER, 0))
    sock.settimeout(5)

    def exchange(command, session, payload=b""):
        sock.sendto(codec.build_packet(command, session, 1, payload), ("127.0.0.1", server.port))
        return codec.parse_packet(sock.recv(2048))

    session = exchange(codec.CMD_CONNECT, 0).session
    reply = exchange(codec.CMD_AUTH, session, make_commkey(KEY, session))
    assert time.monotonic() < answered + guard.backoff(8) - 0.5, "the test itself was too slow to tell"
    assert reply.command == codec.CMD_ACK_UNAUTH
    legit = connect(server.port, True, KEY)  # pyzk over UDP from 127.0.0.1 is not affected
    assert len(legit.get_users()) > 0
    legit.disconnect()
    sock.close()


def test_idle_and_unauthenticated_connections_never_lock_the_central_server_out(terminal):
    """20 idle sockets and 4 half-done handshakes from 127.0.0.2, then 16 unauthenticated handshakes spread
    over 127.0.0.3-5 (no address holds more than 4 slots): the unmodified pyzk client at 127.0.0.1 still
    connects and downloads, and every unauthenticated connection is closed after handshake_seconds."""
    _, server = terminal(comm_key=KEY, handshake_seconds=2.0)
    idle = [RawTcp(server.port) for _ in range(20)]
    half = [RawTcp(server.port) for _ in range(4)]
    for h in half:
        h.send(codec.CMD_CONNECT)  # answered ACK_UNAUTH, or refused: the address holds its 4 slots
    assert server.slots.held(ATTACKER) <= 4
    spread = []
    for n in range(16):
        c = RawTcp(server.port, source=f"127.0.0.{3 + n % 3}")
        c.send(codec.CMD_CONNECT)
        spread.append(c)
    assert server.slots.held() <= server.cfg.zk.max_sessions

    t0 = time.monotonic()
    legit = connect(server.port, False, KEY)
    records = legit.get_attendance()
    legit.disconnect()
    assert len(records) == len(PUNCHES) and time.monotonic() - t0 < 3.0

    # none of the unauthenticated connections outlives the handshake limit (plus polling slack)
    assert all(c.closed_within(2.0 + 3.0) for c in idle + half + spread)
    deadline = time.monotonic() + 5
    while server.slots.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.slots.held() == 0
    for c in idle + half + spread:
        c.close()


def test_an_address_gets_at_most_its_share_of_authenticated_sessions(terminal):
    """Four authenticated sessions from 127.0.0.2 are its share; a fifth is refused, while the central
    server's address still connects."""
    _, server = terminal(comm_key=KEY)
    mine = []
    for _ in range(4):
        c = RawTcp(server.port)
        c.connect()
        assert c.auth(KEY).command == codec.CMD_ACK_OK
        mine.append(c)
    fifth = RawTcp(server.port)
    fifth.send(codec.CMD_CONNECT)
    assert fifth.recv() is None  # closed without an answer
    legit = connect(server.port, False, KEY)
    assert legit.get_serialnumber() == "opd-test-01"
    legit.disconnect()
    for c in mine + [fifth]:
        c.close()
