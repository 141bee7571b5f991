"""Shared fixtures: a terminal configured in a temporary state directory, the `presensi` command run as a
real process (the way users, scripts and systemd run it), headless Chromium, a throwaway PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# CI (CI=true) has everything the suite needs (scripts/test.sh installs it, ../shared is laid beside the
# clone): a skip there means a broken set-up that would otherwise pass unseen, so it is a failure.
IN_CI = os.environ.get("CI", "").lower() == "true"


def _skip_as_failure(report) -> None:
    """In CI, turn a skipped test or module (not an expected failure) into a failure that gives the reason."""
    if not (IN_CI and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, where nothing may be skipped (a broken set-up): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _skip_as_failure(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _skip_as_failure(report)  # a module-level skip or importorskip
    return report


def write_config(path: Path, state_dir: Path, extra: str = "", device_id: str = "test-01") -> Path:
    path.write_text(f'[device]\nid = "{device_id}"\n\n[paths]\nstate_dir = "{state_dir}"\n{extra}')
    return path


@pytest.fixture
def config_file(tmp_path) -> Path:
    """A minimal configuration (the two required keys) with an initialised state directory."""
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state")
    result = presensi("init", config=cfg)
    assert result.returncode == 0, result.stderr
    return cfg


def presensi(*args: str, config: Path | None = None, timeout: float = 60, env: dict | None = None,
             input: str | None = None) -> subprocess.CompletedProcess:
    """Run `presensi ARGS` as a separate process and return its result."""
    cmd = [sys.executable, "-m", "terminal.cli", *args]
    if config is not None:
        cmd += ["-c", str(config)]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, input=input,
                          cwd=REPO)


def readline(stream, timeout: float = 30) -> str:
    """One line from a subprocess's pipe ("" at its end), failing after `timeout` seconds instead of waiting
    forever for a process that hangs before it prints. The read runs in a daemon thread, so a pipe that never
    delivers leaves only that thread waiting until the test's teardown ends the process."""
    box: list = []

    def read() -> None:
        try:
            box.append(stream.readline())
        except (OSError, ValueError) as e:  # the pipe was closed under the reader
            box.append(e)

    reader = threading.Thread(target=read, name="test-readline", daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        raise AssertionError(f"no line from the process within {timeout:g} s")
    if isinstance(box[0], Exception):
        raise AssertionError(f"reading the process's output failed: {box[0]}")
    return box[0]


def wait_for(predicate, timeout: float, what, step: float = 0.2):
    """Poll until predicate() gives something true and return it; after `timeout` seconds fail, naming `what`
    (text, or a function giving it, e.g. the state that was seen). Tests wait on conditions, never on sleeps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")


def presensi_json(*args: str, config: Path | None = None, **kw):
    result = presensi(*args, "--json", config=config, **kw)
    assert result.returncode == 0, f"presensi {' '.join(args)} failed: {result.stderr}"
    return json.loads(result.stdout)


@contextmanager
def serve_app(app):
    """Serve an ASGI app with uvicorn on 127.0.0.1 (any free port) in a thread; yields its base URL."""
    from sync.asgi import Served

    served = Served(app, "127.0.0.1", 0, name="test-http")
    try:
        yield served.url
    finally:
        served.stop()


def call_asgi(app, method: str, path: str, body: bytes = b"", headers: dict | None = None,
              client: str = "10.1.2.3") -> tuple[int, dict, bytes]:
    """One request to an ASGI app in this process, as uvicorn would pass it from another client address
    (what a test on 127.0.0.1 cannot be over real HTTP). Returns (status, headers, body)."""
    import asyncio

    raw_headers = [(b"host", b"terminal"), (b"content-length", str(len(body)).encode()),
                   (b"content-type", b"application/x-www-form-urlencoded")]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": raw_headers, "client": (client, 50000), "server": ("terminal", 80)}
    out: dict = {"body": b""}
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # a client that keeps the connection open

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode().title(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out["status"], out["headers"], out["body"]


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared test data lives beside the repository")
    return SHARED


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/browser_support.py), one per test module."""
    from browser_support import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; scripts/test.sh installs it)")
    b = Browser.start()
    yield b
    b.close()


@pytest.fixture(scope="module")
def pg():
    """A throwaway PostgreSQL cluster (Debian's postgresql, started as the postgres user); skipped with the
    reason when it cannot run here. Yields a function that creates a new database and returns its URL."""
    from synctools import postgres_cluster, postgres_unavailable

    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with postgres_cluster() as new_db:
        yield new_db
