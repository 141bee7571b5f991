"""ZK port-4370 wire format, device side: framing, checksums, times, comm key and record layouts.

Pure functions only (no sockets, no database), so the fuzz tests and the server share one definition.
Facts and sources: ../shared/reference/zkteco-protocols.md §1.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

# Commands (pyzk zk/const.py names).
CMD_USERTEMP_RRQ = 9
CMD_OPTIONS_RRQ = 11
CMD_OPTIONS_WRQ = 12
CMD_ATTLOG_RRQ = 13
CMD_CLEAR_DATA = 14
CMD_CLEAR_ATTLOG = 15
CMD_GET_FREE_SIZES = 50
CMD_STARTVERIFY = 60
CMD_CANCELCAPTURE = 62
CMD_GET_PINWIDTH = 69
CMD_SMS_WRQ = 70         # a short message: tag, id, valid minutes, reserved, start time, text
CMD_SMS_RRQ = 71
CMD_DELETE_SMS = 72
CMD_UDATA_WRQ = 73       # a personal message for one user: uid, sms id
CMD_DELETE_UDATA = 74
CMD_GET_TIME = 201
CMD_SET_TIME = 202
CMD_REG_EVENT = 500
CMD_CONNECT = 1000
CMD_EXIT = 1001
CMD_ENABLEDEVICE = 1002
CMD_DISABLEDEVICE = 1003
CMD_RESTART = 1004
CMD_POWEROFF = 1005
CMD_REFRESHDATA = 1013
CMD_REFRESHOPTION = 1014
CMD_GET_VERSION = 1100
CMD_AUTH = 1102
CMD_PREPARE_DATA = 1500
CMD_DATA = 1501
CMD_FREE_DATA = 1502
CMD_PREPARE_BUFFER = 1503
CMD_READ_BUFFER = 1504
CMD_ACK_OK = 2000
CMD_ACK_ERROR = 2001
CMD_ACK_UNAUTH = 2005
CMD_ACK_UNKNOWN = 0xFFFF

EF_ATTLOG = 1
FCT_ATTLOG = 1
FCT_USER = 5

TCP_MAGIC = b"\x50\x50\x82\x7d"
HEADER = struct.Struct("<4H")
TCP_TOP = struct.Struct("<HHI")
USER_RECORD_SIZE = 72
ATT_RECORD_SIZE = 40
LIVE_EVENT = struct.Struct("<24sBB6s")


class FrameError(ValueError):
    """A frame that cannot be parsed; the session answers with an error or closes."""


@dataclass(frozen=True)
class Packet:
    command: int
    checksum: int
    session: int
    reply: int
    payload: bytes


def checksum(data: bytes) -> int:
    """ZK checksum over header (checksum field zero) + payload (zkemsdk.c)."""
    if len(data) % 2:
        total = sum(struct.unpack_from(f"<{len(data) // 2}H", data)) + data[-1]
    else:
        total = sum(struct.unpack(f"<{len(data) // 2}H", data))
    total %= 0xFFFF  # the reference subtracts 65535 on overflow: the same value modulo 65535
    return (~total) & 0xFFFF


def checksum_matches(packet: Packet) -> bool:
    """Equal modulo 65535: pyzk computes over the previous reply id with ~x+65535, which agrees only so."""
    expected = checksum(HEADER.pack(packet.command, 0, packet.session, packet.reply) + packet.payload)
    return (packet.checksum - expected) % 0xFFFF == 0


def parse_packet(data: bytes) -> Packet:
    if len(data) < HEADER.size:
        raise FrameError(f"packet of {len(data)} bytes is shorter than the 8-byte header")
    command, cs, session, reply = HEADER.unpack_from(data)
    return Packet(command, cs, session, reply, bytes(data[HEADER.size:]))


def build_packet(command: int, session: int, reply: int, payload: bytes = b"") -> bytes:
    cs = checksum(HEADER.pack(command, 0, session, reply) + payload)
    return HEADER.pack(command, cs, session, reply) + payload


def tcp_wrap(packet: bytes) -> bytes:
    return TCP_MAGIC + struct.pack("<I", len(packet)) + packet


def tcp_length(top: bytes) -> int:
    """Length announced by an 8-byte TCP prefix; FrameError when the magic is wrong."""
    if len(top) != TCP_TOP.size or top[:4] != TCP_MAGIC:
        raise FrameError("TCP prefix without the 50 50 82 7D magic")
    return struct.unpack_from("<I", top, 4)[0]


# -- short messages ---------------------------------------------------------------------------------------

SMS_HEADER = struct.Struct("<BHHHI")  # tag, id, valid minutes (0: no end), reserved, start (encode_time)
SMS_PERSONAL, SMS_PUBLIC = 253, 254
SMS_TEXT_BYTES = 320


def decode_sms(payload: bytes) -> tuple[int, int, int, dt.datetime, str]:
    """(tag, id, valid_minutes, start, text) of a CMD_SMS_WRQ payload; ValueError if it is none."""
    if len(payload) < SMS_HEADER.size + 1:
        raise ValueError("short message payload too short")
    tag, sms_id, minutes, _, start = SMS_HEADER.unpack_from(payload)
    if tag not in (SMS_PERSONAL, SMS_PUBLIC):
        raise ValueError(f"short message tag {tag} (253 personal, 254 public)")
    raw = payload[SMS_HEADER.size:SMS_HEADER.size + SMS_TEXT_BYTES].split(b"\x00")[0]
    text = "".join(ch for ch in raw.decode("utf-8", errors="replace") if ch.isprintable()).strip()
    if not text or not sms_id:
        raise ValueError("short message without an id or text")
    return tag, sms_id, minutes, decode_time(start), text


def encode_sms(tag: int, sms_id: int, minutes: int, start: dt.datetime, text: str) -> bytes:
    return SMS_HEADER.pack(tag, sms_id, minutes, 0, encode_time(start)) + text.encode()[:SMS_TEXT_BYTES] + b"\x00"


# -- time ------------------------------------------------------------------------------------------------

def encode_time(t: dt.datetime) -> int:
    return (((t.year % 100) * 12 * 31 + (t.month - 1) * 31 + t.day - 1) * 86400
            + (t.hour * 60 + t.minute) * 60 + t.second)


def decode_time(v: int) -> dt.datetime:
    """Raises ValueError for values that are no calendar date (e.g. 31 February)."""
    second, v = v % 60, v // 60
    minute, v = v % 60, v // 60
    hour, v = v % 24, v // 24
    day, v = v % 31 + 1, v // 31
    month, v = v % 12 + 1, v // 12
    if v > 99:
        raise ValueError(f"year {v + 2000}: ZK times carry a two-digit year")
    return dt.datetime(v + 2000, month, day, hour, minute, second)


def encode_time6(t: dt.datetime) -> bytes:
    return bytes((t.year - 2000, t.month, t.day, t.hour, t.minute, t.second))


# -- comm key --------------------------------------------------------------------------------------------

def make_commkey(key: int, session_id: int, ticks: int = 50) -> bytes:
    k = 0
    for i in range(32):
        k = (k << 1) | ((key >> i) & 1)
    k = (k + session_id) & 0xFFFFFFFF
    b = bytes(x ^ y for x, y in zip(struct.pack("<I", k), b"ZKSO", strict=True))
    b = b[2:4] + b[0:2]
    t = ticks & 0xFF
    return bytes((b[0] ^ t, b[1] ^ t, t, b[3] ^ t))


def commkey_valid(payload: bytes, key: int, session_id: int) -> bool:
    if len(payload) < 4:
        return False
    return payload[:4] == make_commkey(key, session_id, payload[2])


# -- records ---------------------------------------------------------------------------------------------

def _fixed(text: str, size: int) -> bytes:
    return text.encode("utf-8", errors="replace")[:size].ljust(size, b"\x00")


def user_record(uid: int, user_id: str, name: str, privilege: int = 0, card: int = 0) -> bytes:
    """72-byte user: uid u16, privilege u8, password 8, name 24, card u32, pad, group 7, pad, user_id 24."""
    return struct.pack("<HB8s24sIx7sx24s", uid, privilege, b"", _fixed(name, 24), card, b"1",
                       _fixed(user_id, 24))


def attendance_record(uid: int, user_id: str, verify: int, local: dt.datetime, state: int,
                      work_code: int = 0) -> bytes:
    """40-byte record: uid u16, user_id 24, verify u8 (pyzk 'status'), time u32, state u8 (pyzk 'punch'),
    work code u32 at offset 32 (where ZK firmware keeps it; pyzk 0.9 reads these 8 bytes as padding), 4
    reserved."""
    return struct.pack("<H24sBIBI4x", uid, _fixed(user_id, 24), verify, encode_time(local), state, work_code)


def live_event(user_id: str, verify: int, state: int, local: dt.datetime) -> bytes:
    return LIVE_EVENT.pack(_fixed(user_id, 24), verify, state, encode_time6(local))


def free_sizes(users: int, records: int, user_cap: int, record_cap: int) -> bytes:
    """20 int32 fields pyzk reads plus 3 for faces (zk-protocol terminal.md)."""
    f = [0] * 23
    f[4], f[8] = users, records
    f[14], f[15], f[16] = 0, user_cap, record_cap
    f[18], f[19] = max(user_cap - users, 0), max(record_cap - records, 0)
    return struct.pack("<23i", *f)
