"""Who may use the central server's pages: accounts with a role, their passwords, sessions, the login
throttle and the audit of logins and actions.

The pages show NIPs, punches and fault photos (personal data under UU 27/2022), so nothing is shown
without a login and each role sees only what its office needs: Diskominfo the devices and their faults,
BKPSDM the punches and the recap, the admin everything and the accounts (ROLES).

- Passwords are kept only as scrypt hashes (hashlib.scrypt, parameters stored with the hash so they can be
  raised later).
- Sessions are server-side rows (`web_sessions`, so several server processes on one PostgreSQL database
  share them): the cookie holds 256 random bits, the table only their SHA-256, so a copy of the database
  lets nobody in. A session is made only by a successful login (a cookie a visitor brings along is never
  adopted: no session fixation); it ends after SESSION_IDLE without use, after SESSION_MAX in any case, when
  the account's password changes or the account is disabled. Each session has its own CSRF token.
- Failed logins are throttled per client address and per account (Throttle): after FREE_FAILURES wrong
  passwords the next attempt waits 2^n seconds, up to MAX_LOCK, without the password being checked.
- Every login, failure, logout and action on the pages goes to `web_audit` (who, when, from where).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass

from .storage import Store

ROLES = {
    "admin": "Administrator (semua halaman dan akun)",
    "diskominfo": "Diskominfo (perangkat dan kerusakan)",
    "bkpsdm": "BKPSDM (presensi dan rekap)",
}
USERNAME = re.compile(r"^[a-z0-9._-]{2,32}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 256  # scrypt takes any length; a megabyte "password" is an attack on the CPU, not a login
SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # 16 MiB, ~50 ms on a server core: slow for guessing, fine for a login
SESSION_IDLE_NS = 30 * 60 * 10**9
SESSION_MAX_NS = 12 * 3600 * 10**9
SEEN_EVERY_NS = 60 * 10**9  # a session's last use is written at most once a minute (reads stay reads)
FREE_FAILURES = 5
MAX_LOCK = 15 * 60.0
FAILURE_WINDOW = 15 * 60.0
MAX_KEYS = 4096

DDL = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, password TEXT NOT NULL, created_ns BIGINT NOT NULL,
    password_ns BIGINT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_sha256 TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL, created_ns BIGINT NOT NULL,
    seen_ns BIGINT NOT NULL, client TEXT);
CREATE TABLE IF NOT EXISTS web_audit (
    id {serial} PRIMARY KEY, created_ns BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT, details TEXT NOT NULL, client TEXT);
CREATE INDEX IF NOT EXISTS web_audit_by_time ON web_audit (created_ns);
CREATE INDEX IF NOT EXISTS web_sessions_by_user ON web_sessions (username);
"""


class AccountError(ValueError):
    """An account cannot be made or changed; the message says what to do."""


def ensure_schema(store: Store) -> None:
    if not getattr(store, "accounts_ready", False):
        store.run_ddl(DDL)
        store.accounts_ready = True  # type: ignore[attr-defined]


# -- passwords ------------------------------------------------------------------------------------------

def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, **SCRYPT)
    return json.dumps({"kdf": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode(),
                       "hash": base64.b64encode(digest).decode()})


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * r * n, dklen=32)


def password_matches(stored: str, password: str) -> bool:
    try:
        doc = json.loads(stored)
        salt, expected = base64.b64decode(doc["salt"]), base64.b64decode(doc["hash"])
        n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])
    except (ValueError, KeyError, TypeError):
        return False
    return doc.get("kdf") == "scrypt" and hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


# A password checked against no account costs the same time, so timing does not tell which names exist.
_DUMMY = hash_password(secrets.token_urlsafe(16))


def check_new_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password must have at most {MAX_PASSWORD} characters")


# -- accounts -------------------------------------------------------------------------------------------

def add(store: Store, username: str, role: str, password: str, *, actor: str) -> None:
    ensure_schema(store)
    if not USERNAME.match(username or ""):
        raise AccountError(f"user name {username!r} is not valid: use 2-32 lowercase letters, digits, '.', '_' "
                           "or '-'")
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    check_new_password(password)
    now = time.time_ns()
    with store.transaction() as cur:
        if store.rows(cur, "SELECT 1 FROM accounts WHERE username=?", (username,)):
            raise AccountError(f"user {username} exists already; change the password with `presensi server user "
                               f"passwd {username}`")
        store.execute(cur, "INSERT INTO accounts (username, role, password, created_ns, password_ns, disabled) "
                      "VALUES (?, ?, ?, ?, ?, 0)", (username, role, hash_password(password), now, now))
        _audit(store, cur, actor, "account-added", username, {"role": role})


def set_password(store: Store, username: str, password: str, *, actor: str) -> None:
    """A new password; every session of the account ends (whoever knew the old one is logged out)."""
    ensure_schema(store)
    check_new_password(password)
    with store.transaction() as cur:
        if not store.rows(cur, "SELECT 1 FROM accounts WHERE username=?", (username,)):
            raise AccountError(f"no user {username!r}; add one with `presensi server user add`")
        store.execute(cur, "UPDATE accounts SET password=?, password_ns=? WHERE username=?",
                      (hash_password(password), time.time_ns(), username))
        store.execute(cur, "DELETE FROM web_sessions WHERE username=?", (username,))
        _audit(store, cur, actor, "password-changed", username, {})


def list_accounts(store: Store) -> list[dict]:
    ensure_schema(store)
    return store.query("SELECT username, role, created_ns, password_ns, disabled FROM accounts ORDER BY username")


def account(store: Store, username: str) -> dict | None:
    ensure_schema(store)
    rows = store.query("SELECT * FROM accounts WHERE username=?", (username,))
    return rows[0] if rows else None


def verify(store: Store, username: str, password: str) -> dict | None:
    """The account when `password` is its password (and it is not disabled), else None. Constant work
    whether or not the account exists."""
    acct = account(store, username) if isinstance(username, str) and USERNAME.match(username) else None
    ok = password_matches(acct["password"] if acct else _DUMMY, password)
    return acct if ok and acct and not acct["disabled"] else None


# -- sessions -------------------------------------------------------------------------------------------

@dataclass
class Session:
    username: str
    role: str
    csrf: str
    token_sha256: str


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(store: Store, username: str, client: str) -> str:
    """A new session for a user who just proved the password; returns the cookie value."""
    token, now = secrets.token_urlsafe(32), time.time_ns()
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM web_sessions WHERE seen_ns < ? OR created_ns < ?",
                      (now - SESSION_IDLE_NS, now - SESSION_MAX_NS))
        store.execute(cur, "INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?, ?)",
                      (_token_hash(token), username, secrets.token_urlsafe(32), now, now, client))
    return token


def session(store: Store, token: str | None) -> Session | None:
    """The live session behind a cookie value, or None (unknown, expired, password changed, disabled)."""
    if not token or len(token) > 128:
        return None
    ensure_schema(store)
    digest, now = _token_hash(token), time.time_ns()
    rows = store.query("SELECT s.username, s.csrf, s.created_ns, s.seen_ns, a.role, a.password_ns, a.disabled "
                       "FROM web_sessions s JOIN accounts a ON a.username = s.username WHERE s.token_sha256=?",
                       (digest,))
    if not rows:
        return None
    s = rows[0]
    if (now - s["seen_ns"] > SESSION_IDLE_NS or now - s["created_ns"] > SESSION_MAX_NS or s["disabled"]
            or s["password_ns"] > s["created_ns"]):
        end_session(store, token)
        return None
    if now - s["seen_ns"] > SEEN_EVERY_NS:
        with store.transaction() as cur:
            store.execute(cur, "UPDATE web_sessions SET seen_ns=? WHERE token_sha256=?", (now, digest))
    return Session(s["username"], s["role"], s["csrf"], digest)


def end_session(store: Store, token: str | None) -> None:
    if token:
        with store.transaction() as cur:
            store.execute(cur, "DELETE FROM web_sessions WHERE token_sha256=?", (_token_hash(token),))


def tokens_equal(a, b) -> bool:
    return isinstance(a, str) and isinstance(b, str) and bool(a) and bool(b) and \
        hmac.compare_digest(a.encode(), b.encode())


# -- audit ----------------------------------------------------------------------------------------------

def audit(store: Store, actor: str, action: str, target: str | None = None, details: dict | None = None,
          client: str | None = None) -> None:
    ensure_schema(store)
    with store.transaction() as cur:
        _audit(store, cur, actor, action, target, details or {}, client)


def _audit(store: Store, cur, actor: str, action: str, target, details: dict, client: str | None = None) -> None:
    store.execute(cur, "INSERT INTO web_audit (created_ns, actor, action, target, details, client) "
                  "VALUES (?, ?, ?, ?, ?, ?)",
                  (time.time_ns(), actor[:64], action, None if target is None else str(target)[:200],
                   json.dumps(details, sort_keys=True, ensure_ascii=False), client))


def audit_log(store: Store, limit: int = 200) -> list[dict]:
    ensure_schema(store)
    return store.query("SELECT * FROM web_audit ORDER BY id DESC LIMIT ?", (limit,))


# -- the login throttle ---------------------------------------------------------------------------------

class Throttle:
    """Failed logins per key (a client address, an account name), in memory and bounded. A key with
    FREE_FAILURES recent failures is locked for 2^(n - FREE_FAILURES) seconds (up to MAX_LOCK) after each
    further failure; while locked its attempts are refused before the password is checked. A key quiet
    for FAILURE_WINDOW starts afresh; a success clears the address (not the account: a guesser who also
    knows one password elsewhere must not unlock a targeted account)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait(self, *keys: str) -> float:
        """Seconds until the keys may have a password checked (0 = now)."""
        now = self.clock()
        with self._lock:
            return max((self._wait(k, now) for k in keys), default=0.0)

    def _wait(self, key: str, now: float) -> float:
        n, last = self._failures.get(key, (0, 0.0))
        if not n:
            return 0.0
        if now - last > FAILURE_WINDOW + MAX_LOCK:
            self._failures.pop(key, None)
            return 0.0
        return max(0.0, last + lock_for(n) - now)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                n, last = self._failures.get(key, (0, 0.0))
                if n and now - last > FAILURE_WINDOW:
                    n = 0
                self._failures[key] = (n + 1, now)
            while len(self._failures) > MAX_KEYS:  # forget the key that failed longest ago
                self._failures.pop(min(self._failures, key=lambda k: self._failures[k][1]))

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def lock_for(failures: int) -> float:
    if failures < FREE_FAILURES:
        return 0.0
    return min(2.0 ** (failures - FREE_FAILURES + 1), MAX_LOCK)
