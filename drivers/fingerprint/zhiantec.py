"""The ZhianTec/GROW family (R30x, R503, AS608, ZFM-20) over UART: pyfingerprint 1.5, unmodified, made to
survive a flaky UART. Registered as `[fingerprint] model = "zhiantec"` (registry.py).

pyfingerprint reads one byte per `read()` and stores a timed-out read as empty bytes (#96), so a packet
survives only if no read ever times out; it then keeps reading up to 12 bytes, which is 24 s on a silent
sensor, and never flushes after noise. We do not patch the library. Instead each connection's serial
object is wrapped (`_GuardedSerial`): the first timed-out read aborts the exchange at once, and a deadline
bounds every call. After any error the connection is closed; the next call reopens it (pyserial flushes
the input on open), drains the line until quiet, and checks the password and system parameters before
anything else is trusted. Health is reported through `health()` and an optional callback.

A garbled exchange (stray bytes before a reply: the R30x handshake byte at power-up, noise on a long UART
cable) is not a fault by itself: the call flushes the line, reconnects and runs again, at most
`garble_retries` more times. Only a garble that persists is reported; every command we use is idempotent
(reads, a search, a store or delete into a named slot), so running one twice is harmless.

Enrolment is the module's own sequence: two reads -> createTemplate -> store -> download the 512-byte
characteristics, which go to the central server and from there to the office's other terminals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pyfingerprint.pyfingerprint import PyFingerprint

from drivers.fingerprint.base import Capture, EnrolmentError, FingerprintSensor, SensorError

USUAL_CAUSES = (
    "usual causes: TX/RX swapped or loose wiring, sensor not powered (3.3 V), wrong baud rate ([fingerprint] "
    "baud, default 57600), a serial console on the port (remove console=serial0,115200 from "
    "/boot/firmware/cmdline.txt), or on a Pi 3/4/Zero W Bluetooth owning the UART (enable_uart=1 and "
    "dtoverlay=disable-bt in config.txt, then open /dev/serial0)"
)


class _ReadTimeout(Exception):
    pass


class _StaleReply(Exception):
    pass


class _GuardedSerial:
    """Stands in for pyfingerprint's pyserial object: a read that times out, or a call that runs past its
    deadline, raises at once instead of feeding empty bytes into the packet parser; and bytes already
    waiting when a new packet is about to be sent are a late reply to an earlier command, which would
    otherwise be taken for the answer to this one."""

    def __init__(self, serial):
        self.serial = serial
        self.deadline: float | None = None
        self.bytes_read = 0
        self._sending = False

    def read(self, size: int = 1) -> bytes:
        self._sending = False
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _ReadTimeout("call deadline passed")
        data = self.serial.read(size)
        if len(data) < size:
            raise _ReadTimeout("no reply within the read timeout")
        self.bytes_read += len(data)
        return data

    def write(self, data: bytes) -> int:
        if not self._sending:  # the first byte of what we send after reading: nothing may be waiting
            self._sending = True
            if self.serial.in_waiting:
                raise _StaleReply("bytes arrived before the command was sent (a late reply)")
        return self.serial.write(data)

    def __getattr__(self, name):
        return getattr(self.serial, name)


class ZhianTecSensor(FingerprintSensor):
    """One sensor on one port. Every method is serialised by a lock, bounded in time, and either returns a
    trustworthy answer or raises SensorError; it never hangs on a silent or noisy line."""

    model = "zhiantec"

    def __init__(self, port: str, baud: int = 57600, address: int = 0xFFFFFFFF, password: int = 0, *,
                 reply_timeout: float = 1.0, call_deadline: float = 8.0, garble_retries: int = 2,
                 on_health: Callable[[dict], None] | None = None):
        self.port, self.baud, self.address, self.password = port, baud, address, password
        self.reply_timeout = reply_timeout  # the slowest command (GenImg, Search) answers within ~1 s
        self.call_deadline = call_deadline
        self.garble_retries = max(0, garble_retries)
        self._retrying = False  # while True a protocol error is counted, not reported: the call runs again
        self.on_health = on_health
        self.lock = threading.RLock()
        self.params: dict | None = None
        self._pf: PyFingerprint | None = None
        self._guard: _GuardedSerial | None = None
        self._health = {"state": "closed", "port": port, "fault": None, "category": None, "since": time.monotonic(),
                        "consecutive_errors": 0, "errors": 0, "recoveries": 0, "last_ok": None, "garbled": 0}

    @classmethod
    def from_settings(cls, settings, *, on_health: Callable[[dict], None] | None = None,
                      **overrides) -> ZhianTecSensor:
        options = {"port": settings.port, "baud": settings.baud, "address": settings.address,
                   "password": settings.password, "reply_timeout": settings.reply_timeout, **overrides}
        return cls(**options, on_health=on_health)

    # --- connection --------------------------------------------------------------------------------------
    def open(self) -> dict:
        """Connect (if not connected) and return the system parameters."""
        with self.lock:
            self._retry_garbled(lambda: None)
            return dict(self.params)

    def close(self) -> None:
        with self.lock:
            self._drop()
            self._set_health("closed", None, None)

    def _connect(self) -> None:
        try:
            pf = PyFingerprint(self.port, self.baud, self.address, self.password)
        except ValueError as e:
            raise SensorError(f"fingerprint settings rejected: {e}", "config") from e
        except Exception as e:  # pyserial: no such file, permission denied, busy
            hint = ("no such device: the adapter is unplugged or [fingerprint] port is wrong"
                    if "No such file" in str(e) else USUAL_CAUSES)
            raise self._fail(SensorError(f"cannot open the fingerprint sensor port {self.port}: {e}; {hint}",
                                         "unreachable")) from e
        try:  # two programs on one UART garble each other: hold an exclusive lock (pyserial's flock)
            pf._PyFingerprint__serial.exclusive = True
        except Exception as e:
            pf._PyFingerprint__serial.close()
            raise self._fail(SensorError(f"the fingerprint sensor port {self.port} is in use by another program "
                                         f"({e}); if the presensi daemon runs, stop it first (systemctl stop "
                                         "presensi) or use its web page", "busy")) from e
        guard = _GuardedSerial(pf._PyFingerprint__serial)
        guard.serial.timeout = self.reply_timeout
        pf._PyFingerprint__serial = guard
        self._pf, self._guard = pf, guard
        self._drain()
        # Health turns ok only once the whole handshake passed: a stale late reply can satisfy VfyPwd alone.
        if not self._exchange("verifyPassword", record_success=False):
            self._drop()
            raise self._fail(SensorError(f"the fingerprint sensor on {self.port} rejected the password; set "
                                   "[fingerprint] password to the sensor's password", "password"))
        status, system_id, capacity, security, address, packet_code, baud_n = self._exchange(
            "getSystemParameters", record_success=False)
        if address != self.address or packet_code > 3 or not 0 < capacity <= 3000:
            self._drop()
            raise self._fail(SensorError(f"the fingerprint sensor on {self.port} sent implausible system parameters "
                                   f"(capacity {capacity}, packet code {packet_code}); the line is noisy", "protocol"))
        self.params = {"capacity": capacity, "security_level": security, "packet_size": (32, 64, 128, 256)[packet_code],
                       "baud": baud_n * 9600, "address": address, "system_id": system_id, "status": status}
        self._check_quiet("the handshake")
        self._succeeded()

    def _drain(self, quiet: float = 0.05, limit: float = 0.5) -> None:
        """Swallow bytes still arriving from an earlier exchange (a late reply) until the line is quiet."""
        serial = self._guard.serial
        end = time.monotonic() + limit
        old = serial.timeout
        serial.timeout = quiet
        try:
            while time.monotonic() < end and serial.read(256):
                pass
        except Exception:
            pass
        finally:
            serial.timeout = old

    def _drop(self) -> None:
        pf, self._pf, self._guard = self._pf, None, None
        if pf is not None:
            try:
                pf._PyFingerprint__serial.close()
            except Exception:
                pass

    # --- calls -------------------------------------------------------------------------------------------
    def call(self, method: str, *args, deadline: float | None = None):
        """Run one pyfingerprint method; connects first if needed. Raises SensorError on any failure."""
        with self.lock:
            return self._retry_garbled(lambda: self._exchange(method, *args, deadline=deadline))

    def _retry_garbled(self, step: Callable[[], object]):
        """Connect if needed, then run `step`; a garbled exchange (category "protocol") is flushed by
        reconnecting and run again, bounded. Other errors (silence, a refusal, a lost port) raise at once."""
        for attempt in range(self.garble_retries + 1):
            self._retrying = attempt < self.garble_retries
            try:
                if self._pf is None:
                    self._connect()
                return step()
            except SensorError as e:
                if e.category != "protocol" or attempt == self.garble_retries:
                    raise
                self._drop()  # reopening flushes pyserial's input; _connect drains what still arrives
            finally:
                self._retrying = False
        raise AssertionError("unreachable")  # the loop returns or raises

    def _exchange(self, method: str, *args, deadline: float | None = None, record_success: bool = True):
        guard = self._guard
        guard.deadline = time.monotonic() + (deadline or self.call_deadline)
        bytes_before = guard.bytes_read
        try:
            result = (getattr(self._pf, method) if method != "raw_command" else self._raw_command)(*args)
        except Exception as e:
            error = _classify(e, method, self.port, partial=guard.bytes_read > bytes_before)
            if error.category == "sensor":  # a clear answer over a healthy line: nothing to recover
                raise error from e
            self._drop()
            raise self._fail(error) from e
        finally:
            guard.deadline = None
        if record_success:
            self._succeeded()
        return result

    def _fail(self, error: SensorError) -> SensorError:
        """Record a fault; the caller raises the returned error. A garble about to be retried is only counted."""
        h = self._health
        if self._retrying and error.category == "protocol":
            h["garbled"] += 1
            return error
        h["consecutive_errors"] += 1
        h["errors"] += 1
        self._set_health("fault", str(error), error.category)
        return error

    def _succeeded(self) -> None:
        h = self._health
        h["last_ok"] = time.monotonic()
        if h["state"] != "ok":
            if h["state"] == "fault":
                h["recoveries"] += 1
            h["consecutive_errors"] = 0
            self._set_health("ok", None, None)

    def _set_health(self, state: str, fault: str | None, category: str | None) -> None:
        h = self._health
        changed = (h["state"], h["fault"]) != (state, fault)
        if h["state"] != state:
            h["since"] = time.monotonic()
        h.update(state=state, fault=fault, category=category)
        if changed and self.on_health:
            try:
                self.on_health(self.health())
            except Exception:  # a broken listener must not break the sensor
                pass

    def health(self) -> dict:
        """{"state": "ok"|"fault"|"closed", "fault": message|None, "category", "since" (monotonic), counters}."""
        return dict(self._health, ok=self._health["state"] == "ok", error=self._health["fault"])

    # --- what the terminal uses -----------------------------------------------------------------------------
    def info(self) -> dict:
        with self.lock:
            params = self.open()
            return {"capacity": params["capacity"], "templates": self.call("getTemplateCount"),
                    "security_level": params["security_level"], "packet_size": params["packet_size"],
                    "baud": params["baud"]}

    def capture(self) -> Capture | None:
        """One read of the glass: None when no finger, else the on-sensor search result. The three steps run
        as one locked exchange; any error raises, so a corrupted exchange never yields a Capture."""
        with self.lock:
            if not self.call("readImage"):
                return None
            self.call("convertImage", 0x01)
            slot, score = self.call("searchTemplate")
            self._check_quiet("searchTemplate")
            if slot < 0:
                return Capture(None, 0)
            if slot >= self.params["capacity"]:
                self._drop()
                raise self._fail(SensorError(f"the sensor reported slot {slot} beyond its capacity; reply discarded"))
            return Capture(slot, score)

    def finger_present(self) -> bool:
        return bool(self.call("readImage"))

    def _check_quiet(self, method: str) -> None:
        """Bytes waiting after a complete reply mean an earlier late reply shifted the exchange: distrust it."""
        if self._guard.serial.in_waiting:
            self._drop()
            raise self._fail(SensorError(f"unexpected bytes after {method}: the exchange was out of step; discarded"))

    def template_slots(self) -> set[int]:
        """Occupied slots, from the sensor's index pages."""
        with self.lock:
            capacity = self.open()["capacity"]
            slots = set()
            for page in range((capacity + 255) // 256):
                bits = self.call("getTemplateIndex", page)
                slots.update(256 * page + i for i, used in enumerate(bits) if used and 256 * page + i < capacity)
            return slots

    def write_template(self, slot: int, template: bytes) -> None:
        """Upload a 512-byte template into CharBuffer1 (read back and compared) and store it in `slot`."""
        with self.lock:
            if not self.call("uploadCharacteristics", 0x01, list(template)):
                raise SensorError(f"template for slot {slot} read back differently after upload")
            stored = self.call("storeTemplate", slot, 0x01)
            if stored != slot:
                raise SensorError(f"template stored in slot {stored}, expected {slot}")

    def read_template(self, slot: int) -> bytes:
        with self.lock:
            self.call("loadTemplate", slot, 0x01)
            return bytes(self.call("downloadCharacteristics", 0x01))

    def delete_templates(self, slot: int, count: int = 1) -> None:
        if not self.call("deleteTemplate", slot, count):
            raise SensorError(f"the sensor could not delete slot {slot}")

    def enrol(self, slot: int, *, prompt: Callable[[str], None] = lambda step: None, timeout: float = 20.0,
               poll: float = 0.05) -> bytes:
        """Two reads of the same finger into CharBuffer1 and 2, createTemplate, store in `slot`, download."""
        with self.lock:
            prompt("place")
            self._wait_finger(True, timeout, poll)
            self._read_into(0x01)
            prompt("lift")
            self._wait_finger(False, timeout, poll)
            prompt("place_again")
            self._wait_finger(True, timeout, poll)
            self._read_into(0x02)
            if not self.call("createTemplate"):
                raise EnrolmentError("the two reads were not of the same finger; start again")
            stored = self.call("storeTemplate", slot, 0x01)
            if stored != slot:
                raise SensorError(f"the sensor stored the template in slot {stored}, not {slot}")
            template = bytes(self.call("downloadCharacteristics", 0x01))
            prompt("done")
            return template

    def _wait_finger(self, present: bool, timeout: float, poll: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.finger_present() == present:
                return
            time.sleep(poll)
        raise EnrolmentError("no finger on the sensor in time; start again" if present else
                             "the finger was not lifted in time; start again")

    def _read_into(self, buffer: int) -> None:
        try:
            self.call("convertImage", buffer)
        except SensorError as e:
            if e.category != "sensor":
                raise
            raise EnrolmentError(f"the image was not usable ({e}); press the finger flat and try again") from e

    def _raw_command(self, payload: tuple[int, ...]) -> list[int]:
        """A command pyfingerprint 1.5 lacks, through its own packet functions: the ack's payload."""
        self._pf._PyFingerprint__writePacket(0x01, payload)
        pid, reply = self._pf._PyFingerprint__readPacket()
        if pid != 0x07:
            raise Exception("The received packet is no ack packet!")
        return reply

    def set_led(self, control: int, colour: int, speed: int = 0x80, count: int = 0) -> None:
        """R503 ring LED (AuraLedConfig 0x35): control 1 breathe, 2 flash, 3 on, 4 off, 5 fade on, 6 fade
        off; colour 1 red, 2 blue, 3 purple, 4 green, 5 yellow, 6 cyan, 7 white."""
        reply = self.call("raw_command", (0x35, control, speed, colour, count))
        if reply[0] != 0:
            raise SensorError(f"the sensor refused the LED command (code {reply[0]:#04x}; R30x modules have no "
                              "ring LED)", "sensor")

    def clear(self) -> None:
        if not self.call("clearDatabase"):
            raise SensorError("the sensor could not clear its template database")


# pyfingerprint's messages for a reply that did not parse; any other Exception is the module's clear answer.
_LINE_ERRORS = ("valid header", "checksum is wrong", "no ack packet", "no data packet", "Communication error",
                "Unknown error 0x21", "address is wrong")


def _classify(error: Exception, method: str, port: str, partial: bool = False) -> SensorError:
    text = str(error) or type(error).__name__
    if isinstance(error, _StaleReply):
        return SensorError(f"the fingerprint sensor on {port} answered late, out of step with {method}; "
                           "the line was reset", "protocol")
    if isinstance(error, _ReadTimeout) and partial:
        return SensorError(f"the reply from the fingerprint sensor on {port} to {method} was cut short", "protocol")
    if isinstance(error, _ReadTimeout):
        return SensorError(f"the fingerprint sensor on {port} did not answer {method} ({text}); {USUAL_CAUSES}",
                           "unreachable")
    if type(error).__name__ in ("SerialException", "PortNotOpenError") or isinstance(error, OSError):
        return SensorError(f"the fingerprint sensor port {port} failed during {method} ({text}): adapter "
                           "unplugged or port taken by another program", "unreachable")
    if isinstance(error, ValueError) or (type(error) is Exception and not any(m in text for m in _LINE_ERRORS)):
        return SensorError(f"the fingerprint sensor refused {method}: {text}", "sensor")
    return SensorError(f"garbled reply from the fingerprint sensor on {port} during {method}: {text}", "protocol")
