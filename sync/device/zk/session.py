"""One ZK client session: the device side of every command pyzk and the PHP ZKLibrary send.

Transport-free: `handle(packet)` yields reply packets (bytes without the TCP prefix); the server wraps and
sends them. Memory per session is bounded: a prepared read is a description (record range), and each
chunk is produced from the database when asked for, never more than MAX_CHUNK bytes at a time.
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections.abc import Iterator

from sync.device.zk import codec as c
from sync.device.zk import sms
from sync.device.zk.data import TerminalView, serial_number
from sync.device.zk.guard import AuthThrottle

log = logging.getLogger(__name__)
FIRMWARE = "Ver 6.60 Apr 28 2020 presensi-edge"
PLATFORM = "ZMM220_TFT"
SMALL_READ = 1016          # answer 1503 with one CMD_DATA up to this size (fits one UDP datagram)
MAX_CHUNK = 0x10000        # largest 1504 read accepted (pyzk asks 0xFFC0 on TCP, 16 KiB on UDP)
UDP_DATA = 1024            # DATA datagram payload size (pyzk and ZKLibrary read 1024 + 8)
USER_CAPACITY = 65534
RECORD_CAPACITY = 10_000_000
WINDOW = 8192              # punch records encoded at a time for a buffered read (320 KiB)
SESSION_AUTH_FAILURES = 5  # wrong comm keys one session may send before it is closed


class ReadBuffer:
    """A snapshot of users or punches as the ZK buffer `uint32 size + records`, produced on demand."""

    def __init__(self, view: TerminalView, kind: str, after: int, through: int):
        self.view, self.kind = view, kind
        if kind == "users":
            users = view.users()
            self.body = b"".join(c.user_record(u.uid, u.user_id, u.name, u.privilege) for u in users)
            self.after = self.through = 0
        else:
            self.body = None
            self.after, self.through = after, max(after, through)
            self.uids = {u.user_id: u.uid for u in view.users()}
            self._window: tuple[int, bytes] = (0, b"")
        count = len(self.body) if self.body is not None else (self.through - self.after) * c.ATT_RECORD_SIZE
        self.size = 4 + count

    def read(self, start: int, n: int) -> bytes:
        end = min(start + n, self.size)
        head = struct.pack("<I", self.size - 4)
        if self.body is not None:
            return (head + self.body)[start:end] if start < 4 else self.body[start - 4:end - 4]
        rs = c.ATT_RECORD_SIZE
        first = max(start - 4, 0) // rs
        last = (max(end - 4, 0) + rs - 1) // rs
        records = self._records(first, last)
        blob = (head if start < 4 else b"") + records
        offset = start if start < 4 else (start - 4) - first * rs
        return blob[offset:offset + (end - start)]


    def _records(self, first: int, last: int) -> bytes:
        """Encoded records [first, last), through a window of WINDOW records: a download reads 40 chunks
        of 64 KiB, and the corrected times (timeline.annotate) cost far less per record in big batches."""
        rs = c.ATT_RECORD_SIZE
        start, blob = self._window
        if not (start <= first and last <= start + len(blob) // rs):
            end = min(max(last, first + WINDOW), self.through - self.after)
            blob = b"".join(
                c.attendance_record(p.uid, p.user_id, p.verify, p.local, p.state, p.work_code)
                for p in self.view.punches(self.after + first, self.after + end, self.uids, batch=WINDOW)
            )
            self._window = start, blob = first, blob
        return blob[(first - start) * rs:(last - start) * rs]


class Session:
    def __init__(self, view: TerminalView, client: str, *, udp: bool, throttle: AuthThrottle | None = None):
        cfg = view.cfg
        self.view, self.client, self.udp = view, client, udp
        self.throttle = throttle  # shared by all sessions: comm-key checks are rationed per address
        self.auth_failures = 0
        self.comm_key = cfg.zk.comm_key
        self.verify_checksum = cfg.zk.verify_checksum
        self.id = secrets.randbelow(0xFFFE) + 1
        self.authenticated = False
        self.connected = False
        self.closed = False
        self.buffer: ReadBuffer | None = None
        self.snapshot: tuple[int, int] | None = None
        self.live_after: int | None = None
        self.started = self.last_seen = time.monotonic()
        self.options = {
            "~SerialNumber": serial_number(cfg), "~Platform": PLATFORM,
            "~DeviceName": cfg.device.name or "presensi-edge", "MAC": "00:00:00:00:00:00",
            "~ZKFPVersion": "10", "ZKFaceVersion": "0", "~ExtendFmt": "0", "~UserExtFmt": "1",
            "FaceFunOn": "0", "CompatOldFirmware": "0", "~OS": "1", "~PIN2Width": "24",
            "~IsOnlyRFMachine": "0", "~MaxAttLogCount": str(RECORD_CAPACITY // 10000),
        }
        self.handlers = {
            c.CMD_CONNECT: self._connect, c.CMD_AUTH: self._auth, c.CMD_EXIT: self._exit,
            c.CMD_GET_VERSION: lambda p: self._ok(p, FIRMWARE.encode() + b"\x00"),
            c.CMD_OPTIONS_RRQ: self._option, c.CMD_OPTIONS_WRQ: self._ok,
            c.CMD_GET_TIME: self._get_time, c.CMD_SET_TIME: self._set_time,
            c.CMD_GET_FREE_SIZES: self._sizes, c.CMD_CLEAR_ATTLOG: self._clear_attlog,
            c.CMD_ENABLEDEVICE: self._ok, c.CMD_DISABLEDEVICE: self._ok, c.CMD_REFRESHDATA: self._ok,
            c.CMD_REFRESHOPTION: self._ok, c.CMD_CANCELCAPTURE: self._ok, c.CMD_STARTVERIFY: self._ok,
            c.CMD_GET_PINWIDTH: lambda p: self._ok(p, b"\x18"), c.CMD_FREE_DATA: self._free,
            c.CMD_PREPARE_BUFFER: self._prepare, c.CMD_READ_BUFFER: self._read_chunk,
            c.CMD_REG_EVENT: self._reg_event, c.CMD_ATTLOG_RRQ: self._direct_read,
            c.CMD_USERTEMP_RRQ: self._direct_read, c.CMD_ACK_ERROR: self._ok, c.CMD_ACK_UNKNOWN: self._ok,
            c.CMD_CLEAR_DATA: self._refuse, c.CMD_RESTART: self._refuse, c.CMD_POWEROFF: self._refuse,
            c.CMD_SMS_WRQ: lambda p: self._sms(p, sms.write), c.CMD_DELETE_SMS: lambda p: self._sms(p, sms.delete),
            c.CMD_UDATA_WRQ: lambda p: self._sms(p, sms.assign),
            c.CMD_DELETE_UDATA: lambda p: self._sms(p, lambda *a: sms.assign(*a, remove=True)),
        }

    # -- dispatch ----------------------------------------------------------------------------------------

    def handle(self, pkt: c.Packet) -> Iterator[bytes]:
        self.last_seen = time.monotonic()
        if pkt.command == c.CMD_ACK_OK:
            return iter(())  # pyzk acknowledges live events; an answer would corrupt its next read
        if self.verify_checksum and not c.checksum_matches(pkt):
            return self._reply(c.CMD_ACK_ERROR, pkt)
        if pkt.command not in (c.CMD_CONNECT, c.CMD_AUTH) and not (self.authenticated and pkt.session == self.id):
            return self._reply(c.CMD_ACK_UNAUTH, pkt)
        handler = self.handlers.get(pkt.command)
        if handler is None:
            return self._reply(c.CMD_ACK_UNKNOWN, pkt)
        try:
            return handler(pkt)
        except (struct.error, ValueError, OverflowError) as e:
            log.info("zk %s: bad command %d (%s)", self.client, pkt.command, e)
            return self._reply(c.CMD_ACK_ERROR, pkt)

    def expired(self, idle: float, max_age: float) -> bool:
        now = time.monotonic()
        return (now - self.started > max_age) or (self.live_after is None and now - self.last_seen > idle)

    def _reply(self, command: int, pkt: c.Packet, payload: bytes = b"") -> Iterator[bytes]:
        yield c.build_packet(command, self.id, pkt.reply, payload)

    def _ok(self, pkt: c.Packet, payload: bytes = b"") -> Iterator[bytes]:
        return self._reply(c.CMD_ACK_OK, pkt, payload)

    def _refuse(self, pkt: c.Packet) -> Iterator[bytes]:
        self.view.log.audit(f"zk:{self.client}", "zk-command-refused", {"command": pkt.command})
        return self._reply(c.CMD_ACK_ERROR, pkt)

    # -- connection --------------------------------------------------------------------------------------

    def _connect(self, pkt: c.Packet) -> Iterator[bytes]:
        self.connected = True
        self.authenticated = self.comm_key == 0
        return self._reply(c.CMD_ACK_OK if self.authenticated else c.CMD_ACK_UNAUTH, pkt)

    def _auth(self, pkt: c.Packet) -> Iterator[bytes]:
        if not (self.connected and pkt.session == self.id):
            return self._reply(c.CMD_ACK_UNAUTH, pkt)
        # TCP waits for its address's turn (slow, never wrong); UDP, one thread for all, is refused unchecked
        if self.throttle is not None and not self.throttle.turn(self.client, wait=not self.udp):
            return self._auth_failed(pkt, checked=False)
        if c.commkey_valid(pkt.payload, self.comm_key, self.id):
            self.authenticated = True
            if self.throttle is not None:
                self.throttle.succeeded(self.client)
            return self._ok(pkt)
        return self._auth_failed(pkt, checked=True)

    def _auth_failed(self, pkt: c.Packet, *, checked: bool) -> Iterator[bytes]:
        self.auth_failures += 1
        if checked and self.throttle is not None:
            delay = self.throttle.failed(self.client)
            n = self.throttle.failures(self.client)
            if n & (n - 1) == 0:  # 1, 2, 4, 8 ...: a guessing attack cannot fill the journal (never the key)
                log.warning("zk %s: wrong comm key (%d from this address; next check in %.1f s)",
                            self.client, n, delay)
        elif checked:
            log.warning("zk %s: wrong comm key", self.client)
        if self.auth_failures >= SESSION_AUTH_FAILURES:
            self.closed = True  # the server closes the connection (TCP) or drops the session (UDP)
        return self._reply(c.CMD_ACK_UNAUTH, pkt)

    def _exit(self, pkt: c.Packet) -> Iterator[bytes]:
        self.closed = True
        return self._ok(pkt)

    # -- simple reads and writes -------------------------------------------------------------------------

    def _option(self, pkt: c.Packet) -> Iterator[bytes]:
        name = pkt.payload.split(b"\x00")[0].decode("ascii", errors="replace").strip()
        if name not in self.options:
            return self._reply(c.CMD_ACK_ERROR, pkt)
        return self._ok(pkt, f"{name}={self.options[name]}".encode() + b"\x00")

    def _get_time(self, pkt: c.Packet) -> Iterator[bytes]:
        return self._ok(pkt, struct.pack("<I", c.encode_time(self.view.now_local())))

    def _set_time(self, pkt: c.Packet) -> Iterator[bytes]:
        local = c.decode_time(struct.unpack_from("<I", pkt.payload)[0])
        # A claim unless the operator vouched for keyed clients ([zk] trust_set_time, refused by the config
        # check with comm_key 0): with key 0 anyone on the LAN is "authenticated".
        zk = self.view.cfg.zk
        trusted = "[zk] trust_set_time" if zk.trust_set_time and self.comm_key != 0 else None
        # one-second resolution, plus the network path
        self.view.record_time_sample("zk-settime", local, f"zk:{self.client}", uncertainty_s=2.0,
                                     trusted_by=trusted)
        return self._ok(pkt)

    def _sms(self, pkt: c.Packet, action) -> Iterator[bytes]:
        """Short messages for the kiosk (sync/device/zk/sms.py): ACK_OK when stored, ACK_ERROR when refused."""
        actor = f"zk:{self.client}"
        try:
            action(self.view, self.comm_key, actor, pkt.payload)
        except sms.SmsRefused as e:
            self.view.log.audit(actor, "zk-sms-refused", {"command": pkt.command, "reason": str(e)})
            log.warning("zk %s: short message refused: %s", self.client, e)
            return self._reply(c.CMD_ACK_ERROR, pkt)
        return self._ok(pkt)

    @property
    def collected_key(self) -> str:
        """Collected marks are per client address and per punch log (a new log starts at seq 1)."""
        return f"{self.view.log.log_id}|{self.client}"

    def visible_range(self) -> tuple[int, int]:
        return self.view.store.collected_through(self.collected_key), self.view.head()

    def _sizes(self, pkt: c.Packet) -> Iterator[bytes]:
        self.snapshot = after, through = self.visible_range()
        users = len(self.view.users())
        return self._ok(pkt, c.free_sizes(users, max(through - after, 0), USER_CAPACITY, RECORD_CAPACITY))

    def _clear_attlog(self, pkt: c.Packet) -> Iterator[bytes]:
        # Marks what this client has seen as collected (the snapshot of its last read): punches that
        # arrived after its download are not hidden by it, and nothing is ever deleted.
        through = self.snapshot[1] if self.snapshot else self.view.head()
        self.view.store.mark_collected(self.collected_key, through)
        self.view.log.audit(f"zk:{self.client}", "zk-clear-attendance", {"collected_through_seq": through})
        return self._ok(pkt)

    def _reg_event(self, pkt: c.Packet) -> Iterator[bytes]:
        flags = struct.unpack_from("<I", pkt.payload)[0] if len(pkt.payload) >= 4 else 0
        self.live_after = self.view.head() if flags & c.EF_ATTLOG else None
        return self._ok(pkt)

    # -- buffered reads ----------------------------------------------------------------------------------

    def _make_buffer(self, table: int) -> ReadBuffer:
        if table == c.CMD_USERTEMP_RRQ:
            return ReadBuffer(self.view, "users", 0, 0)
        if table != c.CMD_ATTLOG_RRQ:
            raise ValueError(f"unsupported buffered table {table}")
        after, through = self.snapshot or self.visible_range()
        return ReadBuffer(self.view, "attlog", after, through)

    def _prepare(self, pkt: c.Packet) -> Iterator[bytes]:
        _one, table, _fct, _ext = struct.unpack_from("<bhii", pkt.payload)
        self.buffer = buf = self._make_buffer(table)
        if buf.size <= SMALL_READ:
            data = buf.read(0, buf.size)
            self.buffer = None
            return self._reply(c.CMD_DATA, pkt, data)
        return self._ok(pkt, struct.pack("<BIII", 0, buf.size, buf.size, 0))

    def _read_chunk(self, pkt: c.Packet) -> Iterator[bytes]:
        start, n = struct.unpack_from("<ii", pkt.payload)
        buf = self.buffer
        if buf is None or start < 0 or n <= 0 or n > MAX_CHUNK or start + n > buf.size:
            return self._reply(c.CMD_ACK_ERROR, pkt)
        return self._stream(pkt, buf.read(start, n))

    def _stream(self, pkt: c.Packet, data: bytes) -> Iterator[bytes]:
        """PREPARE_DATA, the data (one DATA frame on TCP, 1024-byte datagrams on UDP), ACK_OK; one reply id."""
        yield c.build_packet(c.CMD_PREPARE_DATA, self.id, pkt.reply, struct.pack("<II", len(data), 0))
        if self.udp:
            for i in range(0, len(data), UDP_DATA):
                yield c.build_packet(c.CMD_DATA, self.id, pkt.reply, data[i:i + UDP_DATA])
        else:
            yield c.build_packet(c.CMD_DATA, self.id, pkt.reply, data)
        yield c.build_packet(c.CMD_ACK_OK, self.id, pkt.reply)

    def _direct_read(self, pkt: c.Packet) -> Iterator[bytes]:
        """Legacy clients (PHP ZKLibrary) send 13 / 9 directly: PREPARE_DATA, 1024-byte DATA packets, ACK."""
        if pkt.command == c.CMD_ATTLOG_RRQ:
            self.snapshot = self.visible_range()
        buf = self._make_buffer(pkt.command)
        yield c.build_packet(c.CMD_PREPARE_DATA, self.id, pkt.reply, struct.pack("<I", buf.size))
        for start in range(0, buf.size, 64 * UDP_DATA):  # read 64 KiB at a time: memory stays bounded
            block = buf.read(start, min(64 * UDP_DATA, buf.size - start))
            for i in range(0, len(block), UDP_DATA):
                yield c.build_packet(c.CMD_DATA, self.id, pkt.reply, block[i:i + UDP_DATA])
        yield c.build_packet(c.CMD_ACK_OK, self.id, pkt.reply)

    def _free(self, pkt: c.Packet) -> Iterator[bytes]:
        self.buffer = None
        return self._ok(pkt)

    # -- live capture ------------------------------------------------------------------------------------

    def live_events(self, limit: int = 100) -> list[bytes]:
        """Command-500 frames for punches since the last call (event code in the session field, reply 0)."""
        if self.live_after is None:
            return []
        head = self.view.head()
        if head <= self.live_after:
            return []
        uids = {u.user_id: u.uid for u in self.view.users()}
        frames = []
        through = min(head, self.live_after + limit)
        for p in self.view.punches(self.live_after, through, uids):
            frames.append(c.build_packet(c.CMD_REG_EVENT, c.EF_ATTLOG, 0,
                                         c.live_event(p.user_id, p.verify, p.state, p.local)))
        self.live_after = through
        return frames
