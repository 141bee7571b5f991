"""A ZhianTec fingerprint sensor on a real pseudo-terminal, for tests, the demo and trying without hardware.

The unmodified pyfingerprint (or any client) opens the pty's slave — or a stable symlink to it — and talks
the real packet protocol (sensorsim.py beside this module holds the module's logic). This layer adds what
the wire adds: byte pacing at the configured baud, per-command latency, line faults switched at runtime, a
power cycle, unplugging (the pty disappears) and a raw packet log.

    python -m drivers.fingerprint.emulator --capacity 162 --link /tmp/ttyFINGER

prints the device path, then reads console commands on stdin (type `help`).
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import random
import select
import struct
import termios
import threading
import time
import tty
from pathlib import Path

from drivers.fingerprint.emulator import protocol as p
from drivers.fingerprint.emulator.sensorsim import INSTRUCTION_NAMES, SensorSim, Settings

# name → what it does to each reply while switched on (docs for the console and the tests' parametrize).
FAULTS = {
    "garbage": "noise bytes before the reply (a bad converter, a baud mismatch)",
    "stray55": "one stray 0x55 byte before the reply (the R503 power-on byte)",
    "garbage3": "three stray bytes before the reply (an R30x power-up handshake byte plus UART noise)",
    "bad_checksum": "the reply's checksum is wrong",
    "truncated": "the reply's last bytes never arrive",
    "wrong_pid": "the reply's packet id is not an ack",
    "drop": "one byte in the middle of the reply is lost",
    "empty": "an ack with LEN = 2: no confirmation code at all",
    "late": "the reply comes later than the client's timeout",
    "hang": "the module stops answering until it is power-cycled",
    "unplugged": "the adapter is pulled: the pty disappears",
}

TCGETS2 = 0x802C542A  # struct termios2; c_ispeed at byte offset 36 holds the exact client speed

# Manual figures (image capture under 0.3-1 s, search under 1 s), for demos and benchmarks.
REALISTIC_LATENCY = {p.GEN_IMG: 0.35, p.IMG_2_TZ: 0.12, p.SEARCH: 0.15, p.REG_MODEL: 0.1, p.STORE: 0.03,
                     p.DELETE_CHAR: 0.03, p.EMPTY: 0.2}


class FingerprintEmulator:
    """Usage: `with FingerprintEmulator(Settings(capacity=162), link=tmp / "ttyFP") as emu: emu.path`."""

    def __init__(self, settings: Settings | None = None, *, link: str | Path | None = None,
                 paced: bool = True, latency: dict[int, float] | None = None, late_seconds: float = 3.0,
                 check_baud: bool = True, log_path: str | Path | None = None, log_size: int = 5000):
        self.sim = SensorSim(settings)
        self.link = Path(link) if link else None
        self.paced = paced
        self.latency = dict(latency or {})
        self.late_seconds = late_seconds
        self.check_baud = check_baud
        self.packet_log: collections.deque[dict] = collections.deque(maxlen=log_size)
        self._log_file = open(log_path, "a", encoding="ascii") if log_path else None  # noqa: SIM115
        self._faults: dict[str, int | None] = {}
        self._hung = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None
        self._thread: threading.Thread | None = None
        self.packets_handled = 0

    # --- lifecycle -----------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The path a client opens: the symlink when one was asked for, else the pty's slave."""
        return str(self.link) if self.link else self.slave_name

    def start(self) -> str:
        self._plug()
        self._thread = threading.Thread(target=self._run, name="fingerprint-emulator", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._unplug()
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def power_cycle(self) -> None:
        """Power off and on: pending SetSysPara applies, buffers clear, a hang ends, the password locks."""
        with self._lock:
            self._hung = False
            self._faults.pop("hang", None)
            self.sim.power_on()

    # --- the simulated finger --------------------------------------------------------------------------
    def place_finger(self, template: bytes, score: int = 120, quality: str = "good") -> None:
        self.sim.place_finger(template, score, quality)

    def place_unknown_finger(self) -> None:
        self.sim.place_finger(random.randbytes(512))

    def remove_finger(self) -> None:
        self.sim.remove_finger()

    # --- fault switches --------------------------------------------------------------------------------
    def set_fault(self, name: str, count: int | None = None) -> None:
        """Switch a fault on for the next `count` replies, or until cleared (None)."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            if name == "unplugged":
                self._unplug()
            self._faults[name] = count

    def clear_fault(self, name: str | None = None) -> None:
        """Clear one fault (or all). Clearing `hang` is a power cycle; clearing `unplugged` plugs back in."""
        with self._lock:
            names = [name] if name else list(self._faults)
            for n in names:
                self._faults.pop(n, None)
                if n == "hang":
                    self.power_cycle()
                if n == "unplugged":
                    self._plug()

    @property
    def faults(self) -> dict[str, int | None]:
        with self._lock:
            return dict(self._faults)

    def client_baud(self) -> int | None:
        """The speed the client configured on the slave (None if unknown)."""
        fd = self._master
        if fd is None:
            return None
        try:
            raw = fcntl.ioctl(fd, TCGETS2, bytes(44))
        except OSError:
            return None
        return struct.unpack_from("I", raw, 36)[0] or None

    # --- pty -------------------------------------------------------------------------------------------
    def _plug(self) -> None:
        with self._lock:
            if self._master is not None:
                return
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no line discipline, before any client opens it
            _set_speed(slave, self.sim.settings.baud)  # a client that sets no speed gets the module's
            os.set_blocking(master, False)
            self._master, self._slave, self.slave_name = master, slave, os.ttyname(slave)
            if self.link:
                tmp = self.link.with_name(self.link.name + ".new")
                tmp.unlink(missing_ok=True)
                os.symlink(self.slave_name, tmp)
                os.replace(tmp, self.link)

    def _unplug(self) -> None:
        with self._lock:
            if self.link:
                self.link.unlink(missing_ok=True)
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None

    # --- the line --------------------------------------------------------------------------------------
    def _run(self) -> None:
        parser = p.StreamParser()
        rx_busy_until = 0.0
        while not self._stop.is_set():
            fd = self._master
            if fd is None:
                self._stop.wait(0.02)
                parser = p.StreamParser()
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(fd, 4096)
            except OSError:  # unplugged meanwhile, or EIO while no client has the port open
                self._stop.wait(0.01)
                continue
            now = time.monotonic()
            if self.paced:  # the bytes were on the wire for 10 bits each
                rx_busy_until = max(rx_busy_until, now) + len(data) * 10 / self.sim.settings.baud
            if self._hung:
                continue
            parser.feed(data)
            self._drain(parser, rx_busy_until)

    def _drain(self, parser: p.StreamParser, rx_busy_until: float) -> None:
        while not self._stop.is_set():
            try:
                packet = parser.next_packet()
            except p.BadChecksum as e:
                self._log("rx", e.packet, note="bad checksum")
                reply = self.sim.bad_checksum_reply(e.packet)
            else:
                if packet is None:
                    return
                self._log("rx", packet)
                reply = self._answer(packet)
            if not reply:
                continue
            if self.paced:
                self._stop.wait(max(0.0, rx_busy_until - time.monotonic()))
            self._send(reply)

    def _answer(self, packet: p.Packet) -> bytes:
        self.packets_handled += 1
        if self.check_baud:
            baud = self.client_baud()
            if baud and abs(baud - self.sim.settings.baud) > self.sim.settings.baud * 0.03:
                return random.randbytes(12)  # a UART at the wrong speed sees framing garbage
        reply = self.sim.handle(packet)
        delay = self.latency.get(packet.instruction, 0.0) if packet.instruction is not None else 0.0
        if delay:
            self._stop.wait(delay)
        return reply

    def _send(self, reply: bytes) -> None:
        reply = self._apply_faults(reply)
        if reply is None:
            return
        for frame in _frames(reply):
            self._log("tx", frame)
        baud = self.sim.settings.baud
        sent, started = 0, time.monotonic()
        while sent < len(reply) and not self._stop.is_set():
            chunk = reply[sent:sent + 64]
            fd = self._master
            if fd is None:
                return
            try:
                n = os.write(fd, chunk)
            except BlockingIOError:
                select.select([], [fd], [], 0.05)
                continue
            except OSError as e:
                if e.errno in (errno.EIO, errno.EBADF):
                    return
                raise
            sent += n
            if self.paced:
                self._stop.wait(max(0.0, started + sent * 10 / baud - time.monotonic()))

    def _apply_faults(self, reply: bytes) -> bytes | None:
        with self._lock:
            active = [name for name in list(self._faults) if self._take(name)]
        if "hang" in active:
            self._hung = True
            return None
        if "unplugged" in active or self._master is None:
            return None
        out = bytearray(reply)
        if "bad_checksum" in active:
            out[p.HEADER_LEN + _payload_len(out)] ^= 0x5A
        if "wrong_pid" in active:
            out = bytearray(p.encode(p.PID_DATA, bytes(out[p.HEADER_LEN:p.HEADER_LEN + _payload_len(out)]),
                                     int.from_bytes(out[2:6], "big"))) + out[p.HEADER_LEN + _payload_len(out) + 2:]
        if "empty" in active:
            out = bytearray(p.encode(p.PID_ACK, b"", int.from_bytes(out[2:6], "big")))
        if "truncated" in active:
            del out[-3:]
        if "drop" in active:
            del out[len(out) // 2]
        if "stray55" in active:
            out[:0] = b"\x55"
        if "garbage3" in active:
            out[:0] = b"\x55\x00\xfe"
        if "garbage" in active:
            out[:0] = bytes(random.choice([0x00, 0x13, 0x7E, 0xA5, 0xFF]) for _ in range(7))
        if "late" in active:
            self._stop.wait(self.late_seconds)
        return bytes(out)

    def _take(self, name: str) -> bool:
        remaining = self._faults[name]
        if remaining is None:
            return True
        if remaining <= 1:
            del self._faults[name]
        else:
            self._faults[name] = remaining - 1
        return True

    def _log(self, direction: str, packet: p.Packet, note: str = "") -> None:
        # Data packets carry templates and images: only their size is logged (nothing biometric in logs).
        body = packet.payload.hex() if packet.pid in (p.PID_COMMAND, p.PID_ACK) else f"<{len(packet.payload)} bytes>"
        entry = {"t": time.monotonic(), "dir": direction, "pid": packet.pid, "address": packet.address,
                 "payload": body, "note": note}
        if direction == "rx" and packet.instruction is not None:
            entry["command"] = INSTRUCTION_NAMES.get(packet.instruction, hex(packet.instruction))
        self.packet_log.append(entry)
        if self._log_file:
            arrow = "<<<" if direction == "rx" else ">>>"
            self._log_file.write(f"{entry['t']:.4f} {arrow} pid={packet.pid:02x} {body} {note}\n".rstrip() + "\n")
            self._log_file.flush()


def _set_speed(fd: int, baud: int) -> None:
    speed = getattr(termios, f"B{baud}", None)
    if speed is None:  # 28800, 48000, ...: no termios constant; clients set their own speed anyway
        return
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _payload_len(frame: bytes | bytearray) -> int:
    return int.from_bytes(frame[7:9], "big") - 2


def _frames(data: bytes):
    parser = p.StreamParser(max_payload=4096)
    parser.feed(data)
    while True:
        try:
            packet = parser.next_packet()
        except p.BadChecksum as e:
            packet = e.packet
        if packet is None:
            return
        yield packet
