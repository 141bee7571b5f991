"""The module's logic behind the wire: a ZhianTec R30x/AS608 as a state machine, packet in → reply bytes out.

No I/O and no timing here (drivers/fingerprint/emulator/device.py puts it on a pty, paces it and injects line
faults). The module rules follow the ZFM-20 manual and ../shared/reference/fingerprint-sensor.md §1/§3:
another address gets no reply; after SetPwd everything but VfyPwd gets 0x21 until VfyPwd succeeds;
SetSysPara is answered under the old configuration and takes effect at the next power-on (a switch makes
it immediate); acks are full length even on failure.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, replace

from drivers.fingerprint.emulator import protocol as p

TEMPLATE_SIZE = 512
IMAGE_WIDTH, IMAGE_HEIGHT = 256, 288
IMAGE_BYTES = IMAGE_WIDTH * IMAGE_HEIGHT // 2  # 4 bits per pixel


@dataclass(frozen=True)
class Settings:
    capacity: int = 1000
    packet_size: int = 128
    security_level: int = 3
    password: int = 0
    address: int = p.DEFAULT_ADDRESS
    baud: int = 57600
    system_id: int = 0
    # #41 and #64 disagree on when SetSysPara applies; the manual says "after the next power-on".
    sys_para_immediate: bool = False

    def __post_init__(self):
        if self.packet_size not in p.PACKET_SIZES:
            raise ValueError(f"packet size must be one of {p.PACKET_SIZES}")
        if self.baud % 9600 or not 9600 <= self.baud <= 115200:
            raise ValueError("baud must be a multiple of 9600 from 9600 to 115200")
        if not 1 <= self.security_level <= 5:
            raise ValueError("security level must be 1-5")


@dataclass
class Finger:
    """What lies on the glass: the template it reads as, the score a match reports, its image quality."""

    template: bytes
    score: int = 120
    quality: str = "good"  # good | messy (0x06) | few_features (0x07) | unreadable (0x03)


@dataclass
class _Buffer:
    data: bytes
    score: int = 100


def synthetic_template(seed: int | str) -> bytes:
    """A deterministic 512-byte template shaped like real R30x dumps: two 256-byte halves starting 03 01."""
    out = bytearray()
    for half in range(2):
        digest = b""
        counter = 0
        while len(digest) < 254:
            digest += hashlib.sha256(f"{seed}/{half}/{counter}".encode()).digest()
            counter += 1
        out += b"\x03\x01" + digest[:254]
    return bytes(out)


def synthetic_image(template: bytes) -> bytes:
    """A 256×288, 4-bit image derived from the template (two pixels per byte, high nibble = even x)."""
    seed = hashlib.sha256(template).digest()
    row = bytes(seed[i % len(seed)] ^ (i * 37 & 0xFF) for i in range(IMAGE_WIDTH // 2))
    return b"".join(row[y % 7:] + row[: y % 7] for y in range(IMAGE_HEIGHT))


class SensorSim:
    """One module's state. Thread-safe: tests and the console poke it while the emulator thread talks."""

    def __init__(self, settings: Settings | None = None):
        self.lock = threading.RLock()
        self.flash = settings or Settings()  # what power-on loads
        self.library: dict[int, bytes] = {}
        self.finger: Finger | None = None
        self.forced_codes: dict[int, deque[int]] = defaultdict(deque)
        self.led: tuple[int, ...] | None = None
        # readImage calls answered "no finger": a test waits for the client to have seen a finger lifted
        # (as a person waits for the sensor) instead of sleeping and hoping the client polled meanwhile.
        self.empty_reads = 0
        self.power_on()

    # --- state a test or the console changes -------------------------------------------------------
    def power_on(self) -> None:
        with self.lock:
            self.settings = self.flash
            self.buffers: dict[int, _Buffer | None] = {1: None, 2: None}
            self.image: Finger | None = None
            self.locked = self.settings.password != 0
            self.receiving: tuple[int, bytearray] | None = None

    def place_finger(self, template: bytes, score: int = 120, quality: str = "good") -> None:
        with self.lock:
            self.finger = Finger(bytes(template), score, quality)

    def remove_finger(self) -> None:
        with self.lock:
            self.finger = None

    def force_code(self, instruction: int, code: int, times: int = 1) -> None:
        """Answer the next `times` commands `instruction` with confirmation `code` (every code is testable)."""
        with self.lock:
            self.forced_codes[instruction].extend([code] * times)

    def store(self, slot: int, template: bytes) -> None:
        with self.lock:
            if not 0 <= slot < self.settings.capacity:
                raise ValueError(f"slot {slot} outside capacity {self.settings.capacity}")
            self.library[slot] = bytes(template)

    # --- the wire side -------------------------------------------------------------------------------
    def handle(self, packet: p.Packet) -> bytes:
        """Bytes to send back for one received packet (b"" when the module stays silent)."""
        with self.lock:
            if packet.address != self.settings.address:
                return b""
            if packet.pid in (p.PID_DATA, p.PID_END):
                return self._receive_data(packet)
            if packet.pid != p.PID_COMMAND or not packet.payload:
                return self._ack(p.ERR_COMM)
            instruction = packet.payload[0]
            if self.forced_codes.get(instruction):
                return self._ack(self.forced_codes[instruction].popleft(), b"\x00" * _PARAM_LEN.get(instruction, 0))
            if self.locked and instruction != p.VFY_PWD:
                return self._ack(p.MUST_VERIFY_PASSWORD)
            handler = _HANDLERS.get(instruction)
            if handler is None:
                return self._ack(p.ERR_COMM)
            return handler(self, packet.payload[1:])

    def bad_checksum_reply(self, packet: p.Packet) -> bytes:
        with self.lock:
            return b"" if packet.address != self.settings.address else self._ack(p.ERR_COMM)

    def _ack(self, code: int, params: bytes = b"", address: int | None = None) -> bytes:
        return p.ack(code, params, self.settings.address if address is None else address)

    def _data(self, data: bytes) -> bytes:
        return p.split_data(data, self.settings.packet_size, self.settings.address)

    def _receive_data(self, packet: p.Packet) -> bytes:
        if self.receiving is None:
            return b""  # data nobody asked for: a real module ignores it
        buffer_id, data = self.receiving
        data += packet.payload
        if packet.pid == p.PID_END:
            self.buffers[buffer_id] = _Buffer(bytes(data))
            self.receiving = None
        return b""

    def _buffer_id(self, params: bytes) -> int | None:
        return params[0] if params and params[0] in (1, 2) else None

    # --- instructions --------------------------------------------------------------------------------
    def _verify_password(self, params: bytes) -> bytes:
        if len(params) < 4:
            return self._ack(p.ERR_COMM)
        if int.from_bytes(params[:4], "big") != self.settings.password:
            return self._ack(p.WRONG_PASSWORD)
        self.locked = False
        return self._ack(p.OK)

    def _set_password(self, params: bytes) -> bytes:
        reply = self._ack(p.OK)
        password = int.from_bytes(params[:4], "big")
        self.settings = replace(self.settings, password=password)
        self.flash = replace(self.flash, password=password)
        self.locked = True
        return reply

    def _set_address(self, params: bytes) -> bytes:
        address = int.from_bytes(params[:4], "big")
        self.settings = replace(self.settings, address=address)
        self.flash = replace(self.flash, address=address)
        return self._ack(p.OK)  # already under the new address, as the manual says

    def _set_sys_para(self, params: bytes) -> bytes:
        if len(params) < 2:
            return self._ack(p.ERR_COMM)
        register, value = params[0], params[1]
        changes = {4: ("baud", lambda v: v * 9600, range(1, 13)), 5: ("security_level", int, range(1, 6)),
                   6: ("packet_size", lambda v: p.PACKET_SIZES[v], range(0, 4))}
        if register not in changes or value not in changes[register][2]:
            return self._ack(p.BAD_REGISTER)
        name, convert, _ = changes[register]
        reply = self._ack(p.OK)  # answered under the old configuration
        self.flash = replace(self.flash, **{name: convert(value)})
        if self.settings.sys_para_immediate:
            self.settings = replace(self.settings, **{name: convert(value)})
        return reply

    def _read_sys_para(self, params: bytes) -> bytes:
        s = self.settings
        status = 0x08 if self.image else 0  # ImgBufStat; the manual's example reply has status 0
        body = b"".join(v.to_bytes(2, "big") for v in (status, s.system_id, s.capacity, s.security_level))
        body += s.address.to_bytes(4, "big")
        body += p.PACKET_SIZES.index(s.packet_size).to_bytes(2, "big") + (s.baud // 9600).to_bytes(2, "big")
        return self._ack(p.OK, body)

    def _template_index(self, params: bytes) -> bytes:
        page = params[0] if params else 0
        bits = bytearray(32)
        for slot in self.library:
            if 256 * page <= slot < 256 * (page + 1) and slot < self.settings.capacity:
                offset = slot - 256 * page
                bits[offset // 8] |= 1 << (offset % 8)
        return self._ack(p.OK, bytes(bits))

    def _template_count(self, params: bytes) -> bytes:
        count = sum(1 for slot in self.library if slot < self.settings.capacity)
        return self._ack(p.OK, count.to_bytes(2, "big"))

    def _read_image(self, params: bytes) -> bytes:
        finger = self.finger
        if finger is None:
            self.empty_reads += 1
            return self._ack(p.NO_FINGER)
        if finger.quality == "unreadable":
            return self._ack(p.IMAGE_FAIL)
        self.image = finger
        return self._ack(p.OK)

    def _upload_image(self, params: bytes) -> bytes:
        if self.image is None:
            return self._ack(p.UPLOAD_IMAGE_FAIL)
        return self._ack(p.OK) + self._data(synthetic_image(self.image.template))

    def _convert_image(self, params: bytes) -> bytes:
        buffer_id = self._buffer_id(params)
        if buffer_id is None:
            return self._ack(p.ERR_COMM)
        if self.image is None:
            return self._ack(p.INVALID_IMAGE)
        code = {"messy": p.TOO_MESSY, "few_features": p.FEW_FEATURES}.get(self.image.quality)
        if code is not None:
            return self._ack(code)
        self.buffers[buffer_id] = _Buffer(self.image.template, self.image.score)
        return self._ack(p.OK)

    def _create_template(self, params: bytes) -> bytes:
        one, two = self.buffers[1], self.buffers[2]
        if one is None or two is None or one.data != two.data:
            return self._ack(p.ENROLL_MISMATCH)
        self.buffers[2] = _Buffer(one.data, one.score)
        return self._ack(p.OK)

    def _store(self, params: bytes) -> bytes:
        buffer_id = self._buffer_id(params)
        if buffer_id is None or len(params) < 3:
            return self._ack(p.ERR_COMM)
        slot = int.from_bytes(params[1:3], "big")
        buffer = self.buffers[buffer_id]
        if slot >= self.settings.capacity or buffer is None:
            return self._ack(p.BAD_LOCATION)
        self.library[slot] = buffer.data
        return self._ack(p.OK)

    def _search(self, params: bytes) -> bytes:
        buffer_id = self._buffer_id(params)
        if buffer_id is None or len(params) < 5:
            return self._ack(p.ERR_COMM, b"\x00" * 4)
        start, count = int.from_bytes(params[1:3], "big"), int.from_bytes(params[3:5], "big")
        buffer = self.buffers[buffer_id]
        if buffer is not None:
            end = min(start + count, self.settings.capacity)
            for slot in sorted(s for s in self.library if start <= s < end):
                if self.library[slot] == buffer.data:
                    return self._ack(p.OK, slot.to_bytes(2, "big") + min(buffer.score, 0xFFFF).to_bytes(2, "big"))
        return self._ack(p.NOT_FOUND, b"\x00" * 4)

    def _load_char(self, params: bytes) -> bytes:
        buffer_id = self._buffer_id(params)
        if buffer_id is None or len(params) < 3:
            return self._ack(p.ERR_COMM)
        slot = int.from_bytes(params[1:3], "big")
        if slot >= self.settings.capacity:
            return self._ack(p.BAD_LOCATION)
        if slot not in self.library:
            return self._ack(p.LOAD_FAIL)
        self.buffers[buffer_id] = _Buffer(self.library[slot])
        return self._ack(p.OK)

    def _up_char(self, params: bytes) -> bytes:
        buffer_id = self._buffer_id(params)
        if buffer_id is None:
            return self._ack(p.ERR_COMM)
        buffer = self.buffers[buffer_id]
        if buffer is None:
            return self._ack(p.UPLOAD_FAIL)
        return self._ack(p.OK) + self._data(buffer.data)

    def _down_char(self, params: bytes) -> bytes:
        buffer_id = self._buffer_id(params)
        if buffer_id is None:
            return self._ack(p.RECEIVE_FAIL)
        self.receiving = (buffer_id, bytearray())
        return self._ack(p.OK)

    def _delete(self, params: bytes) -> bytes:
        if len(params) < 4:
            return self._ack(p.ERR_COMM)
        start, count = int.from_bytes(params[:2], "big"), int.from_bytes(params[2:4], "big")
        if start >= self.settings.capacity or count == 0:
            return self._ack(p.BAD_LOCATION)
        for slot in range(start, min(start + count, self.settings.capacity)):
            self.library.pop(slot, None)
        return self._ack(p.OK)

    def _empty(self, params: bytes) -> bytes:
        self.library.clear()
        return self._ack(p.OK)

    def _match(self, params: bytes) -> bytes:
        one, two = self.buffers[1], self.buffers[2]
        if one is None or two is None or one.data != two.data:
            return self._ack(p.NO_MATCH, b"\x00\x00")
        return self._ack(p.OK, min(one.score, two.score).to_bytes(2, "big"))

    def _random(self, params: bytes) -> bytes:
        return self._ack(p.OK, random.getrandbits(32).to_bytes(4, "big"))

    def _aura_led(self, params: bytes) -> bytes:
        self.led = tuple(params[:4])
        return self._ack(p.OK)


_HANDLERS = {
    p.VFY_PWD: SensorSim._verify_password, p.SET_PWD: SensorSim._set_password,
    p.SET_ADDER: SensorSim._set_address, p.SET_SYS_PARA: SensorSim._set_sys_para,
    p.READ_SYS_PARA: SensorSim._read_sys_para, p.READ_CON_LIST: SensorSim._template_index,
    p.TEMPLATE_NUM: SensorSim._template_count, p.GEN_IMG: SensorSim._read_image,
    p.UP_IMAGE: SensorSim._upload_image, p.IMG_2_TZ: SensorSim._convert_image,
    p.REG_MODEL: SensorSim._create_template, p.STORE: SensorSim._store, p.SEARCH: SensorSim._search,
    p.LOAD_CHAR: SensorSim._load_char, p.UP_CHAR: SensorSim._up_char, p.DOWN_CHAR: SensorSim._down_char,
    p.DELETE_CHAR: SensorSim._delete, p.EMPTY: SensorSim._empty, p.MATCH: SensorSim._match,
    p.GET_RANDOM: SensorSim._random, p.AURA_LED: SensorSim._aura_led,
}

# Parameter bytes a full-length ack carries, so forced failure codes keep the real frame length.
_PARAM_LEN = {p.READ_SYS_PARA: 16, p.READ_CON_LIST: 32, p.TEMPLATE_NUM: 2, p.SEARCH: 4, p.MATCH: 2,
              p.GET_RANDOM: 4}

INSTRUCTION_NAMES = {code: fn.__name__.lstrip("_") for code, fn in _HANDLERS.items()}

