"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET per state change, and a watchdog that
pings only while the daemon's main loops are alive.

The protocol is a stable systemd interface: newline-separated VAR=VALUE assignments in one AF_UNIX
datagram; a socket path starting with '@' is in the abstract namespace. With `WatchdogSec=` in the unit,
systemd sets WATCHDOG_USEC (and WATCHDOG_PID) and restarts the service when no WATCHDOG=1 arrives in time.
We ping at half that period, and only while every registered loop has beaten recently: a wedged camera
or fingerprint loop must lead to a restart, not be hidden by a healthy pinging thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; a no-op (send returns False) when not started by systemd."""

    def __init__(self, path: str | None = None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.path = path if path is not None else env.get("NOTIFY_SOCKET") or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def _address(self) -> str | bytes:
        assert self.path
        if self.path.startswith("@"):  # abstract namespace: leading NUL, no file
            return b"\0" + self.path[1:].encode()
        return self.path

    def send(self, **fields) -> bool:
        """send(READY=1, STATUS="…") → one datagram. Errors are logged, never raised: systemd going away
        must not take the terminal down (the watchdog then restarts us anyway)."""
        if not self.path:
            return False
        text = "\n".join(f"{k}={_one_line(v)}" for k, v in fields.items())
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(text.encode(), self._address())
                return True
            except OSError as e:
                log.warning("sd_notify to %s failed: %s", self.path, e)
                self._close_locked()
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value) -> str:
    return str(value).replace("\n", " ")[:1000]


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Half of WATCHDOG_USEC in seconds, or None when systemd asked for no watchdog (or for another pid)."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = env.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner.isdigit() and int(owner) != (pid or os.getpid())):
        return None
    return usec / 2e6


class Heartbeat:
    """One main loop's sign of life: call beat() every iteration (cheap: one float store)."""

    def __init__(self, name: str, max_silence: float, clock: Callable[[], float]):
        self.name, self.max_silence, self._clock = name, max_silence, clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self._clock()

    def fresh(self, now: float) -> bool:
        return now - self.last <= self.max_silence


class Watchdog:
    """Pings WATCHDOG=1 every `interval` seconds while all registered heartbeats are fresh.

    interval defaults to half of WATCHDOG_USEC; without a watchdog configured start() does nothing, but
    heartbeats still work so `healthy()` can feed status pages.
    """

    def __init__(self, notifier: Notifier, interval: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, on_stale: Callable[[list[str]], None] | None = None):
        self.notifier = notifier
        self.interval = interval if interval is not None else watchdog_interval()
        self.clock = clock
        self.on_stale = on_stale
        self.beats: dict[str, Heartbeat] = {}
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_stale: list[str] = []

    def register(self, name: str, max_silence: float) -> Heartbeat:
        """A loop that must beat at least every max_silence seconds for the watchdog to keep pinging."""
        hb = Heartbeat(name, max_silence, self.clock)
        self.beats[name] = hb
        return hb

    def unregister(self, name: str) -> None:
        """For a loop that ends on purpose (a device disabled by configuration)."""
        self.beats.pop(name, None)

    def stale(self) -> list[str]:
        now = self.clock()
        return [name for name, hb in list(self.beats.items()) if not hb.fresh(now)]

    def healthy(self) -> bool:
        return not self.stale()

    def ping_once(self) -> bool:
        """Ping if every loop is fresh; returns whether a ping was sent."""
        stale = self.stale()
        if stale:
            if stale != self._was_stale:
                log.error("main loop(s) not responding: %s; withholding the systemd watchdog ping",
                          ", ".join(stale))
                self.notifier.status(f"wedged: {', '.join(stale)}")
                if self.on_stale:
                    self.on_stale(stale)
            self._was_stale = stale
            return False
        self._was_stale = []
        if self.notifier.watchdog():
            self.pings += 1
            return True
        return False

    def start(self) -> bool:
        if not self.interval or not self.notifier.enabled or self._thread is not None:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        self.ping_once()
        while not self._stop.wait(self.interval):
            self.ping_once()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
