"""The admin password, sessions, CSRF tokens and the lock-out after repeated failures.

The password is kept only as a scrypt hash in `state_dir/admin.json` (mode 0600), with its parameters, so
they can be raised later. `presensi init` creates a random one-time password and prints it once; `presensi
admin set-password` replaces it. Sessions live in memory (a restart logs everyone out, which is fine for a
terminal): a 256-bit random cookie, HttpOnly, SameSite=Strict, with an idle and an absolute time limit.
Every POST carries the session's CSRF token.

Failed logins slow down the address they come from, never anyone else: after FREE_FAILURES wrong
passwords each further attempt from that address waits its turn (1 s, 2 s, 4 s ... up to MAX_DELAY) before
the password is checked, so guessing over the office network gets a few tries a minute. The right password
is never refused for someone else's failures (no global lock-out: before, 20 wrong passwords from four
addresses locked the right one out for 15 minutes, renewably); from a guessing address it works too, late.
Only when one address queues more than MAX_DELAY of attempts is the next refused (429) unchecked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_FILE = "admin.json"
ADMIN_USER = "admin"
SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # ~32 MiB, ~0.1 s on a Pi 4: slow for guessing, fine for a login
MIN_PASSWORD = 10
SESSION_IDLE = 30 * 60.0
SESSION_MAX = 12 * 3600.0
MAX_SESSIONS = 20
FREE_FAILURES = 3  # wrong passwords from one address before its attempts are slowed
MAX_DELAY = 60.0  # the back-off of one address grows to this and no further
FAILURE_WINDOW = 15 * 60.0  # an address quiet this long starts afresh
MAX_ADDRESSES = 4096  # back-off bookkeeping is bounded whatever the number of addresses


class PasswordError(ValueError):
    """The password cannot be set or checked; the message says what to do."""


def admin_path(state_dir) -> Path:
    return Path(state_dir) / ADMIN_FILE


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2,
                          dklen=32)


def set_password(state_dir, password: str) -> None:
    """Store the scrypt hash of `password` atomically, readable only by the owner."""
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"the admin password must have at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    doc = {"kdf": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode(),
           "hash": base64.b64encode(_hash(password, salt, **SCRYPT)).decode(), "set_realtime_ns": time.time_ns()}
    path = admin_path(state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_password(state_dir) -> str | None:
    """First run: create a random admin password and return it (the only time it is known in clear text).
    Returns None when a password is already set."""
    if admin_path(state_dir).exists():
        return None
    password = secrets.token_urlsafe(12)  # 16 characters, 96 bits
    set_password(state_dir, password)
    return password


def password_stamp(state_dir) -> int:
    """Changes whenever the password is set (also by `presensi admin set-password` in another process)."""
    try:
        return admin_path(state_dir).stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def verify_password(state_dir, password: str) -> bool:
    try:
        doc = json.loads(admin_path(state_dir).read_text())
        salt, expected = base64.b64decode(doc["salt"]), base64.b64decode(doc["hash"])
        n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])
    except FileNotFoundError:
        raise PasswordError("no admin password is set: run `presensi admin set-password`") from None
    except OSError as e:  # e.g. created by root while the daemon runs as the presensi user
        raise PasswordError(f"{admin_path(state_dir)} cannot be read ({e.strerror}): give it to the daemon's "
                            "user (chown presensi) or run `presensi admin set-password` as that user") from None
    except (ValueError, KeyError, TypeError):
        raise PasswordError(f"{admin_path(state_dir)} is damaged: run `presensi admin set-password`") from None
    if doc.get("kdf") != "scrypt":
        raise PasswordError(f"{admin_path(state_dir)}: unknown kdf; run `presensi admin set-password`")
    return hmac.compare_digest(_hash(password, salt, n, r, p), expected)


@dataclass
class Session:
    token: str
    user: str
    csrf: str
    created: float
    seen: float
    data: dict = field(default_factory=dict)


class Sessions:
    """In-memory sessions and login back-off; thread-safe (the web server has several threads)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # client address -> (failures, last failure)
        self._next_check: dict[str, float] = {}  # client address -> monotonic time its next check may run
        self._lock = threading.Lock()

    def create(self, user: str) -> Session:
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:  # drop the least recently used
                oldest = min(self._sessions.values(), key=lambda x: x.seen)
                del self._sessions[oldest.token]
            self._sessions[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return None
            if now - s.seen > SESSION_IDLE or now - s.created > SESSION_MAX:
                del self._sessions[token]
                return None
            s.seen = now
            return s

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    # -- back-off -------------------------------------------------------------------------------------

    def turn(self, client: str) -> float | None:
        """Seconds this login attempt from `client` must wait before its password is checked (0 = now), or
        None when the address already has MAX_DELAY of attempts queued (answer 429 without checking).
        Each granted turn of a slowed address books the next one, so parallel attempts queue up."""
        now = self.clock()
        with self._lock:
            failures = self._recent_failures(client, now)
            if failures < FREE_FAILURES:
                return 0.0
            at = max(now, self._next_check.get(client, 0.0))
            if at - now > MAX_DELAY:
                return None
            self._next_check[client] = at + backoff(failures)
            return at - now

    def locked(self, client: str) -> float:
        """Seconds until `client` may have a password checked (0 = may now); for pages that want to say so."""
        now = self.clock()
        with self._lock:
            if self._recent_failures(client, now) < FREE_FAILURES:
                return 0.0
            return max(0.0, self._next_check.get(client, 0.0) - now)

    def _recent_failures(self, client: str, now: float) -> int:
        n, last = self._failures.get(client, (0, 0.0))
        if n and now - last > FAILURE_WINDOW:
            self._failures.pop(client, None)
            self._next_check.pop(client, None)
            return 0
        return n

    def failed(self, client: str) -> float:
        """A wrong password from `client`; returns the back-off its next attempt will wait."""
        now = self.clock()
        with self._lock:
            n = self._recent_failures(client, now) + 1
            self._failures[client] = (n, now)
            if len(self._failures) > MAX_ADDRESSES:  # forget the address that failed longest ago
                oldest = min(self._failures, key=lambda k: self._failures[k][1])
                self._failures.pop(oldest)
                self._next_check.pop(oldest, None)
            delay = backoff(n)
            if delay:
                self._next_check[client] = max(self._next_check.get(client, 0.0), now + delay)
            return delay

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
            self._next_check.pop(client, None)


def backoff(failures: int) -> float:
    """No wait for the first FREE_FAILURES failures, then 1 s, 2 s, 4 s ... up to MAX_DELAY."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(2.0 ** (failures - FREE_FAILURES), MAX_DELAY)


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())
