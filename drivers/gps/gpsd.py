"""A tiny client of gpsd's JSON protocol (https://gpsd.io/gpsd_json.html), enough to read one time fix.

Why not the `gps` Python module: Debian ships it as python3-gps for the system interpreter only, and the
protocol is a few lines of newline-delimited JSON: on connect gpsd sends a VERSION object; the client sends
`?WATCH={"enable":true,"json":true};`, gets DEVICES and WATCH, then one TPV ("time-position-velocity") per
receiver cycle. A TPV with `mode` 2 or 3 has a fix and its `time` is the UTC of that fix (ISO 8601).

`stamp` is called the moment each line has arrived (the caller's raw clock reading): the fix time refers to
the start of the receiver's second, and the line arrives some latency after it. Bounded reads everywhere: a
connect and an overall deadline, at most MAX_LINE bytes per line, so a hung or hostile gpsd cannot hang a job.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_LINE = 64 * 1024  # gpsd's longest reports (SKY with many satellites) stay well below this
WATCH = b'?WATCH={"enable":true,"json":true};\n'


class GpsError(Exception):
    """No usable fix: gpsd unreachable, no receiver, no fix in time, or a malformed answer."""


class _Deadline(GpsError):
    """The overall deadline passed while waiting for the next line."""


@dataclass(frozen=True)
class GpsFix:
    time: str  # the TPV's ISO 8601 UTC time of the fix
    mode: int  # 2 = 2D fix, 3 = 3D fix
    device: str
    ept: float | None  # gpsd's own "estimated time error" (s); it ignores the serial latency
    stamp: Any  # what `stamp()` returned when the TPV line arrived
    leapseconds: int | None = None


def read_fix(host: str, port: int, timeout: float, stamp: Callable[[], Any], min_mode: int = 2) -> GpsFix:
    """The first TPV with a fix (mode >= min_mode) and a time, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=max(0.1, timeout))
    except OSError as e:
        raise GpsError(f"gpsd at {host}:{port} is not reachable ({e.strerror or e})") from None
    with sock:
        lines = _Lines(sock, deadline)
        hello = lines.next_object()
        if hello.get("class") != "VERSION":
            raise GpsError(f"gpsd at {host}:{port} did not greet with VERSION (not gpsd?)")
        sock.sendall(WATCH)
        seen_mode = None
        while True:
            try:
                obj, got = lines.next_object(stamp)
            except _Deadline:
                break
            if obj.get("class") != "TPV":
                continue
            mode = obj.get("mode")
            seen_mode = mode
            if isinstance(mode, int) and mode >= min_mode and isinstance(obj.get("time"), str):
                ept = obj.get("ept")
                leap = obj.get("leapseconds")
                return GpsFix(time=obj["time"], mode=mode, device=str(obj.get("device", "")),
                              ept=float(ept) if isinstance(ept, (int, float)) else None, stamp=got,
                              leapseconds=leap if isinstance(leap, int) else None)
            if time.monotonic() >= deadline:
                break
    what = "no report from the receiver" if seen_mode is None else f"last mode {seen_mode}"
    raise GpsError(f"no GPS fix within {timeout:g} s ({what})")


class _Lines:
    """Newline-delimited JSON objects from a socket, bounded in size and time."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline, self.buf = sock, deadline, b""

    def next_object(self, stamp: Callable[[], Any] | None = None):
        line = self._line()
        got = stamp() if stamp else None
        try:
            obj = json.loads(line)
        except ValueError:
            raise GpsError(f"gpsd sent a line that is not JSON: {line[:60]!r}") from None
        if not isinstance(obj, dict):
            raise GpsError("gpsd sent JSON that is not an object")
        return obj if stamp is None else (obj, got)

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _Deadline("gpsd did not answer in time")
            if len(self.buf) > MAX_LINE:
                raise GpsError(f"gpsd sent a line longer than {MAX_LINE} bytes")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(8192)
            except TimeoutError:
                raise _Deadline("gpsd did not answer in time") from None
            except OSError as e:
                raise GpsError(f"gpsd connection failed ({e.strerror or e})") from None
            if not chunk:
                raise GpsError("gpsd closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line
