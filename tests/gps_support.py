"""NMEA sentences for gpsfake (Debian's gpsd-clients) and a stepper that replays them in real time.

gpsfake feeds a log to a real gpsd on a pty. Left to itself it paces sentences by a fixed delay from whenever
it started, so a log's timestamps would not match the moment gpsd reports them. With `-i` it waits for a line
on stdin before each sentence: the stepper sends that line when the host clock (the test's truth) reaches the
sentence's timestamp, as a receiver emits a sentence just after the second it describes.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import socket
import subprocess
import threading
import time

GPSFAKE = shutil.which("gpsfake")


def _checksum(body: str) -> str:
    return f"{functools.reduce(lambda a, c: a ^ ord(c), body, 0):02X}"


def _sentence(body: str) -> str:
    return f"${body}*{_checksum(body)}\r\n"


def rmc(epoch_s: int, *, valid: bool = True) -> str:
    """A GPRMC sentence for a fix at `epoch_s` (Surabaya)."""
    t = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    status = "A" if valid else "V"
    return _sentence(f"GPRMC,{t:%H%M%S}.00,{status},0715.0267,S,11246.1307,E,0.0,0.0,{t:%d%m%y},,,A")


def gga(epoch_s: int, *, valid: bool = True) -> str:
    t = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    q = 1 if valid else 0
    return _sentence(f"GPGGA,{t:%H%M%S}.00,0715.0267,S,11246.1307,E,{q},08,0.9,5.0,M,0.0,M,,")


def write_log(path, first_s: int, seconds: int, *, valid: bool = True) -> list[int]:
    """One GGA + RMC per second from first_s; returns each sentence's timestamp (for the stepper)."""
    stamps = []
    with open(path, "w", newline="") as f:
        for s in range(first_s, first_s + seconds):
            f.write(gga(s, valid=valid) + rmc(s, valid=valid))
            stamps += [s, s]
    return stamps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GpsFake:
    """gpsfake -i on a private port, stepped in real time by a thread; stop() ends it."""

    def __init__(self, log_path, stamps: list[int], *, lag_s: float = 0.05):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [GPSFAKE, "-i", "-1", "-n", "-q", "-P", str(self.port), str(log_path)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.stamps, self.lag = stamps, lag_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._step, daemon=True)
        self.thread.start()

    def _step(self) -> None:
        for s in self.stamps:
            while not self.stopping.is_set() and time.time() < s + self.lag:
                self.stopping.wait(min(0.05, max(0.0, s + self.lag - time.time())))
            if self.stopping.is_set():
                return
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return

    def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gpsfake exited: {self.proc.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gpsfake's gpsd never listened")

    def stop(self) -> None:
        self.stopping.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
