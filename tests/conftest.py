"""Shared fixtures: a terminal configured in a temporary state directory, and the `presensi` command run
as a real process (the way users, scripts and systemd run it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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


def presensi_json(*args: str, config: Path | None = None, **kw):
    result = presensi(*args, "--json", config=config, **kw)
    assert result.returncode == 0, f"presensi {' '.join(args)} failed: {result.stderr}"
    return json.loads(result.stdout)


@contextmanager
def serve_wsgi(app, threads: int = 4):
    """Serve a WSGI app with waitress on 127.0.0.1 (any free port) in a thread; yields its base URL."""
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        server.task_dispatcher.shutdown()


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared test data lives beside the repository")
    return SHARED


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
