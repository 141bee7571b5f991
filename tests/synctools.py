"""Helpers for the sync tests: a terminal state dir with config, the reference server in a uvicorn thread,
the server as a `presensi server run` subprocess, and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from conftest import readline, serve_app

from terminal import config as config_mod
from terminal.log import punchlog

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_terminal(tmp: Path, url: str, token: str | dict, device: str = "dev-01", **central) -> tuple[Path, object]:
    """Initialise a terminal state dir and write its config; returns (config path, Config).

    `token`: the token, or the whole registration from add-device (its token and, when add-device bound no
    key, its one-time enrolment code, which the terminal's first signed request redeems)."""
    tmp.mkdir(parents=True, exist_ok=True)
    state = tmp / f"state-{device}"
    if isinstance(token, dict):
        central.setdefault("enrolment_code", token.get("enrolment_code"))
        token = token["token"]
    settings = {"url": url, "token": token, "timeout": 2.0, "retry_base": 0.02, "max_backoff": 0.3,
                "heartbeat_interval": 0.5, **central}
    lines = [f'[device]\nid = "{device}"\n[paths]\nstate_dir = "{state}"\n[central]']
    for k, v in settings.items():
        if v is not None:
            lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    path = tmp / f"{device}.toml"
    path.write_text("\n".join(lines) + "\n")
    punchlog.init(state)
    return path, config_mod.load(str(path))


def presensi(*args, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "terminal.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"presensi {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc


serve_in_thread = serve_app  # the shared helper (tests/conftest.py)


class ServerProcess:
    """`presensi server run` as a subprocess that can be SIGKILLed and restarted on the same port."""

    def __init__(self, db: str, port: int, args: tuple = ()):
        self.db, self.port, self.proc, self.args = db, port, None, tuple(map(str, args))

    def start(self, timeout: float = 30) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "terminal.cli", "server", "run", "--db", self.db, "--listen",
             f"127.0.0.1:{self.port}", *self.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=REPO)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = readline(self.proc.stdout, max(0.1, deadline - time.monotonic()))
            if line.startswith("listening on "):
                return line.split()[-1]
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the port may still be held by the killed predecessor
                return self.start(deadline - time.monotonic())
        raise AssertionError(f"server did not start: {line!r}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


# -- PostgreSQL ------------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.glob("*/bin/initdb")) if root.exists() else []
    return versions[-1].parent if versions else None


def postgres_unavailable() -> str | None:
    """None when a throwaway cluster can be started, else the reason."""
    if _pg_bin() is None:
        return "PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the cluster as"
    return None


@contextmanager
def postgres_cluster():
    """Start a throwaway cluster on a Unix socket; yields a function () -> postgresql:// URL of a new db."""
    bindir = _pg_bin()
    tmp = Path(tempfile.mkdtemp(prefix="presensi-pg-"))  # outside pytest's 0700 tree: postgres must enter it
    data, sock = tmp / "pgdata", tmp / "pgsock"
    sock.mkdir(parents=True)
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(tmp, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l",
                    str(tmp / "pg.log"), "-o", f"-k {sock} -p {port} -c listen_addresses='' -F", "start"],
                   check=True, capture_output=True, timeout=90)

    def new_db() -> str:
        import psycopg

        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host={sock} port={port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@/{name}?host={sock}&port={port}"

    try:
        yield new_db
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def signed_post(url: str, path: str, body: bytes, token: str, key, device: str = "dev-01", *,
                gzip_body: bool = False, method: str = "POST", headers: dict | None = None,
                enrolment_code: str | None = None):
    """A request signed with `key` as a terminal (or an attacker holding some key) sends it: what raw HTTP
    attacks and resends use instead of the push client."""
    import gzip as gzip_mod

    import requests

    from sync.wire import signed

    data = gzip_mod.compress(body) if gzip_body else body
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})}
    if gzip_body:
        h["Content-Encoding"] = "gzip"
    if key is not None:
        h.update(signed.sign_request(key, method, path, device, data, enrolment_code))
    return requests.request(method, url + path, data=data, headers=h, timeout=10)
