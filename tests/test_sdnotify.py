"""sd_notify against a real AF_UNIX datagram socket (what systemd listens on): READY, STATUS, WATCHDOG at
half of WATCHDOG_USEC, and no pings while a main loop is wedged."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import REPO

from terminal.app import sdnotify


class FakeSystemd:
    """Collects the datagrams a service sends to NOTIFY_SOCKET, with their arrival times."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + path[1:].encode() if path.startswith("@") else path)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, text: str, since: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if text in m.split("\n") and t >= since]

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request, tmp_path):
    path = str(tmp_path / "notify.sock") if request.param == "path" else f"@presensi-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(path)
    yield fake
    fake.close()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_ready_and_status_arrive_as_one_datagram(systemd):
    n = sdnotify.Notifier(env={"NOTIFY_SOCKET": systemd.path})
    assert n.ready(status="database checked, 3 parts ok")
    assert wait_for(lambda: systemd.messages)
    assert systemd.messages[0][1] == "READY=1\nSTATUS=database checked, 3 parts ok"
    n.status("line one\nline two")
    assert wait_for(lambda: len(systemd.messages) == 2)
    assert systemd.messages[1][1] == "STATUS=line one line two"  # a newline would start a new assignment
    n.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    n = sdnotify.Notifier(env={})
    assert not n.enabled and n.ready() is False and n.watchdog() is False
    assert sdnotify.Watchdog(n, 0.1).start() is False


def test_a_vanished_socket_is_logged_not_raised(tmp_path, caplog):
    n = sdnotify.Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.watchdog() is False
    assert "sd_notify" in caplog.text


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "garbage"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_pings_at_half_the_period_and_stops_while_a_loop_is_wedged(systemd):
    # WatchdogSec=2: a ping every second. Long enough that a loaded machine's scheduling delays (tenths of a
    # second) cannot reach the timeout, short enough for a test; what matters is that no gap reaches it.
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "2000000"}
    notifier = sdnotify.Notifier(env=env)
    dog = sdnotify.Watchdog(notifier, sdnotify.watchdog_interval(env))
    camera = dog.register("camera", max_silence=1.5)
    finger = dog.register("fingerprint", max_silence=1.5)
    beating = threading.Event()
    beating.set()
    stop = threading.Event()

    def main_loop():  # the camera loop beats while "working"; wedging = no beats
        while not stop.is_set():
            if beating.is_set():
                camera.beat()
            finger.beat()
            time.sleep(0.05)

    loop = threading.Thread(target=main_loop, daemon=True)
    loop.start()
    assert notifier.ready()
    assert dog.start()
    try:
        t0 = time.monotonic()
        assert wait_for(lambda: len(systemd.times("WATCHDOG=1", since=t0)) >= 4, timeout=30), "pings stopped"
        pings = systemd.times("WATCHDOG=1", since=t0)
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 2.0, f"a gap of {max(gaps):.3f} s reaches the 2 s watchdog timeout"
        assert min(gaps) > 0.5, f"pings {min(gaps):.3f} s apart: not at half the period"

        beating.clear()  # the camera loop wedges
        wedged_at = time.monotonic()
        assert wait_for(lambda: dog.stale() == ["camera"], timeout=30), "the wedged loop was never noticed"
        time.sleep(1.2)  # one ping interval (1 s): a ping decided just before may still go out
        quiet_from = time.monotonic()
        time.sleep(2.5)  # more than the watchdog timeout: systemd would have restarted the daemon
        assert systemd.times("WATCHDOG=1", since=quiet_from) == [], "pinged while a loop was wedged"
        assert not dog.healthy() and dog.stale() == ["camera"]
        assert any("STATUS=wedged: camera" in m for t, m in systemd.messages if t >= wedged_at)

        beating.set()  # the loop recovers: pings resume
        back = time.monotonic()
        assert wait_for(lambda: systemd.times("WATCHDOG=1", since=back), timeout=30)
    finally:
        stop.set()
        dog.stop()
        loop.join(2)
        notifier.close()


def test_a_process_started_with_notify_socket_reports_ready(tmp_path):
    """The environment systemd gives a service: a separate process finds the socket by itself."""
    fake = FakeSystemd(str(tmp_path / "n.sock"))
    try:
        code = ("from terminal.app import sdnotify; n = sdnotify.Notifier(); "
                "import sys; sys.exit(0 if n.ready('ok') and n.watchdog() else 1)")
        env = {**os.environ, "NOTIFY_SOCKET": fake.path, "WATCHDOG_USEC": "1000000"}
        result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, timeout=30,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert wait_for(lambda: len(fake.messages) == 2)
        assert [m for _, m in fake.messages] == ["READY=1\nSTATUS=ok", "WATCHDOG=1"]
    finally:
        fake.close()
