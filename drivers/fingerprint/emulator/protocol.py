"""The ZhianTec/GROW UART packet format (ZFM-20 manual §4, R503 manual), shared by the emulator and tests.

Frame, big-endian: EF 01 | address(4) | PID(1) | LEN(2) = payload + 2 | payload | SUM(2), where SUM is
(PID + LEN bytes + payload bytes) mod 65536 — start code and address are not summed.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\xef\x01"
HEADER_LEN = 9  # start(2) + address(4) + pid(1) + len(2)

PID_COMMAND = 0x01
PID_DATA = 0x02
PID_ACK = 0x07
PID_END = 0x08

# Instruction codes (the first payload byte of a command packet).
GEN_IMG = 0x01
IMG_2_TZ = 0x02
MATCH = 0x03
SEARCH = 0x04
REG_MODEL = 0x05
STORE = 0x06
LOAD_CHAR = 0x07
UP_CHAR = 0x08  # module → host ("downloadCharacteristics" in pyfingerprint)
DOWN_CHAR = 0x09  # host → module ("uploadCharacteristics")
UP_IMAGE = 0x0A
DELETE_CHAR = 0x0C
EMPTY = 0x0D
SET_SYS_PARA = 0x0E
READ_SYS_PARA = 0x0F
SET_PWD = 0x12
VFY_PWD = 0x13
GET_RANDOM = 0x14
SET_ADDER = 0x15
TEMPLATE_NUM = 0x1D
READ_CON_LIST = 0x1F
AURA_LED = 0x35  # R503 only

# Confirmation codes.
OK = 0x00
ERR_COMM = 0x01
NO_FINGER = 0x02
IMAGE_FAIL = 0x03
TOO_MESSY = 0x06
FEW_FEATURES = 0x07
NO_MATCH = 0x08
NOT_FOUND = 0x09
ENROLL_MISMATCH = 0x0A
BAD_LOCATION = 0x0B
LOAD_FAIL = 0x0C
UPLOAD_FAIL = 0x0D
RECEIVE_FAIL = 0x0E
UPLOAD_IMAGE_FAIL = 0x0F
DELETE_FAIL = 0x10
CLEAR_FAIL = 0x11
WRONG_PASSWORD = 0x13
INVALID_IMAGE = 0x15
FLASH_ERROR = 0x18
BAD_REGISTER = 0x1A
WRONG_ADDRESS = 0x20
MUST_VERIFY_PASSWORD = 0x21

PACKET_SIZES = (32, 64, 128, 256)  # system parameter 6: code → bytes
DEFAULT_ADDRESS = 0xFFFFFFFF


@dataclass(frozen=True)
class Packet:
    address: int
    pid: int
    payload: bytes

    @property
    def instruction(self) -> int | None:
        return self.payload[0] if self.pid == PID_COMMAND and self.payload else None


def checksum(pid: int, payload: bytes) -> int:
    length = len(payload) + 2
    return (pid + (length >> 8) + (length & 0xFF) + sum(payload)) & 0xFFFF


def encode(pid: int, payload: bytes, address: int = DEFAULT_ADDRESS) -> bytes:
    length = len(payload) + 2
    return (START + address.to_bytes(4, "big") + bytes([pid]) + length.to_bytes(2, "big") + bytes(payload)
            + checksum(pid, payload).to_bytes(2, "big"))


def ack(code: int, params: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    return encode(PID_ACK, bytes([code]) + params, address)


class BadChecksum(Exception):
    """A complete frame whose checksum disagrees; carries the frame so a module can answer 0x01."""

    def __init__(self, packet: Packet):
        super().__init__("bad checksum")
        self.packet = packet


class StreamParser:
    """Turns a byte stream into packets, resynchronising on EF 01 after noise (what pyfingerprint lacks)."""

    def __init__(self, max_payload: int = 1024):
        self.buffer = bytearray()
        self.max_payload = max_payload
        self.skipped = 0  # noise bytes dropped while hunting for a start code

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None until more bytes arrive. Raises BadChecksum for a bad frame."""
        while True:
            start = self.buffer.find(START)
            if start < 0:
                keep = 1 if self.buffer.endswith(START[:1]) else 0
                self.skipped += len(self.buffer) - keep
                del self.buffer[: len(self.buffer) - keep]
                return None
            if start:
                self.skipped += start
                del self.buffer[:start]
            if len(self.buffer) < HEADER_LEN:
                return None
            length = int.from_bytes(self.buffer[7:9], "big")
            if length < 2 or length - 2 > self.max_payload:  # not a real frame: skip this start code
                self.skipped += 2
                del self.buffer[:2]
                continue
            total = HEADER_LEN + length
            if len(self.buffer) < total:
                return None
            frame = bytes(self.buffer[:total])
            del self.buffer[:total]
            packet = Packet(int.from_bytes(frame[2:6], "big"), frame[6], frame[9:total - 2])
            if int.from_bytes(frame[total - 2:], "big") != checksum(packet.pid, packet.payload):
                raise BadChecksum(packet)
            return packet


def split_data(data: bytes, packet_size: int, address: int = DEFAULT_ADDRESS) -> bytes:
    """Data packets of `packet_size` bytes (PID 02), the last one with its real length (PID 08)."""
    chunks = [data[i:i + packet_size] for i in range(0, len(data), packet_size)] or [b""]
    out = bytearray()
    for i, chunk in enumerate(chunks):
        out += encode(PID_END if i == len(chunks) - 1 else PID_DATA, chunk, address)
    return bytes(out)
