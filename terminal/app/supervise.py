"""Supervision: no exception ends a worker unseen, and the punch log may be unavailable without the daemon
stopping.

- `FaultBook` keeps the faults the daemon raises itself (a worker's error, a worker restarted, the punch log
  unavailable). They go to `fault_events` (terminal/ops/faults.py) when the database can be written; on a
  full disk they stay in memory - shown on the kiosk, in health and in the heartbeat - and are written once
  space returns.
- `LogGate` is the daemon's punch log when it may not open (a full disk at start): every use raises the
  clear StorageFull/StorageError, so each punch takes the refusal path, and it reopens by itself, so
  punching resumes when space returns, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from terminal.errors import StorageError, StorageFull
from terminal.log import punchlog
from terminal.ops import faults

log = logging.getLogger("presensi.supervise")

FAILED_MESSAGE = "Gagal, silakan ulangi"  # the screen, when a worker failed on an attempt
LOG_UNAVAILABLE = "Penyimpanan penuh — presensi ditolak. Hubungi operator"
LOG_BROKEN = "Penyimpanan bermasalah — presensi ditolak. Hubungi operator"
REOPEN_SECONDS = 5.0  # how often an unavailable punch log is tried again


class FaultBook:
    """The daemon's own faults, written when possible, never lost to a full disk while it runs."""

    def __init__(self, state_dir: Path):
        self.path = punchlog.db_path(state_dir)
        self._lock = threading.Lock()
        self._open: dict[str, dict] = {}  # fault_key -> {"part", "category", "message", "diagnostics"}
        self._queue: list[tuple[str, str, dict]] = []  # (raise|clear, fault_key, arguments) not yet written
        self._load()

    def _load(self) -> None:
        """Faults of ours left open by an earlier run: known here, so that recovery clears them."""
        try:
            conn = punchlog.connect_readonly(self.path)
        except Exception as e:  # no database yet, or unreadable: nothing to take over
            log.debug("open faults not loaded: %s", e)
            return
        try:
            for event in faults.open_faults(conn):
                if event["fault_key"].startswith(("worker:", "storage:")):
                    self._open[event["fault_key"]] = {k: event[k] for k in ("part", "category", "message")}
        finally:
            conn.close()

    def raise_(self, key: str, *, part: str, category: str, message: str, diagnostics: dict | None = None) -> None:
        with self._lock:
            if key in self._open:
                return
            self._open[key] = {"part": part, "category": category, "message": message}
            self._queue.append(("raise", key, {"part": part, "category": category, "message": message,
                                               "diagnostics": diagnostics}))
        log.error("fault %s: %s", key, message)
        self.flush()

    def clear(self, key: str, message: str = "recovered") -> None:
        with self._lock:
            if self._open.pop(key, None) is None:
                return
            self._queue.append(("clear", key, {"message": message}))
        log.info("fault %s cleared: %s", key, message)
        self.flush()

    def is_open(self, key: str) -> bool:
        with self._lock:
            return key in self._open

    def current(self) -> list[dict]:
        """The open faults, for the kiosk's indicators, the heartbeat and the health report."""
        with self._lock:
            return [{"fault_key": k, **v} for k, v in self._open.items()]

    @property
    def unwritten(self) -> int:
        with self._lock:
            return len(self._queue)

    def flush(self) -> bool:
        """Write what is queued; False (and kept) when the database cannot be written now."""
        with self._lock:
            if not self._queue:
                return True
            try:
                conn = punchlog.connect(self.path)
            except Exception as e:
                log.warning("faults kept in memory, the database is not writable: %s", e)
                return False
            try:
                while self._queue:
                    op, key, kw = self._queue[0]
                    if op == "raise":
                        faults.raise_fault(conn, key, **kw)
                    else:
                        faults.clear_fault(conn, key, **kw)
                    self._queue.pop(0)
            except Exception as e:  # e.g. the disk filled: the rest waits for the next flush
                log.warning("faults kept in memory, writing failed: %s", e)
                return False
            finally:
                conn.close()
            return True


class LogGate:
    """The daemon's punch log: the open PunchLog, or the reason it cannot be opened (and a retry)."""

    def __init__(self, cfg, fault_book: FaultBook | None = None, reopen_seconds: float = REOPEN_SECONDS):
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.path = punchlog.db_path(self.state_dir)
        self.faults = fault_book
        self.reopen_seconds = reopen_seconds
        self.error: punchlog.LogError | None = None
        self._log: punchlog.PunchLog | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    def open(self) -> bool:
        """Open (and check) the log. A full or failing disk leaves the gate closed with the reason; a damaged
        database raises (the daemon refuses to start on it, with the recovery text)."""
        with self._lock:
            if self._log is not None:
                return True
            self._next_try = time.monotonic() + self.reopen_seconds
            try:
                punchlog.init(self.state_dir)
                self._log = punchlog.PunchLog(self.state_dir, checkpoint_every=self.cfg.log.checkpoint_every,
                                              check=True)
            except (StorageFull, StorageError) as e:
                first = self.error is None
                self.error = e
                if first:
                    log.error("the punch log cannot be opened: %s; punches are refused until it can", e)
                if self.faults is not None:
                    self.faults.raise_("storage:log", part="database", category="disk",
                                       message=f"punches refused: {e}", diagnostics={"error": str(e)})
                return False
        if self.error is not None:
            log.info("the punch log is open again; punches are recorded")
        self.error = None
        if self.faults is not None:
            self.faults.clear("storage:log", message="the punch log is open again")
            self.faults.flush()
        return True

    @property
    def available(self) -> bool:
        return self._log is not None

    def message(self) -> str | None:
        """What the kiosk says while the log is unavailable (None while it is open)."""
        if self._log is not None:
            return None
        return LOG_UNAVAILABLE if isinstance(self.error, StorageFull) else LOG_BROKEN

    def retry_due(self) -> bool:
        """Try again now if the last attempt is long enough ago; True when the log is open."""
        if self._log is not None:
            return True
        if time.monotonic() < self._next_try:
            return False
        return self.open()

    def current(self) -> punchlog.PunchLog:
        """The open log, or the StorageFull/StorageError that says why punches are refused. (Not `get`:
        every name the PunchLog has passes through to it.)"""
        if self._log is None and not self.retry_due():
            raise self.error or StorageError(f"{self.path}: the punch log is not open")
        return self._log

    def __getattr__(self, name: str):
        # Everything else is the PunchLog's (conn, append, get, head, audit, ...): PunchService, liveness and
        # the web pages use the gate as the log.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.current(), name)

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
