"""A first-come, first-served writer lock shared by threads and processes.

SQLite lets one writer in at a time but serves waiting writers in no particular order (its busy handler
sleeps and retries), so a punch could starve behind a stream of others. This is a CLH queue lock built from
flock(2): each waiter takes a ticket under a short lock, holds the lock file of its own ticket, and waits
on the lock file of the ticket before it. Waiters are therefore served in ticket order, and because the
kernel drops flock locks when a process dies (even by SIGKILL), a dead holder never blocks the queue.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path


class WriterLockTimeout(Exception):
    """Another writer held the punch log for too long."""


class WriterLock:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, exist_ok=True)

    def _slot(self, ticket: int) -> Path:
        return self.dir / f"slot-{ticket % 1_000_000:06d}"

    def _take_ticket(self) -> tuple[int, int]:
        """Return (ticket, fd holding our own slot locked)."""
        entry = os.open(self.dir / "entry", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(entry, fcntl.LOCK_EX)
            raw = os.pread(entry, 32, 0).strip()
            ticket = int(raw) + 1 if raw else 1
            os.pwrite(entry, f"{ticket:<31}\n".encode(), 0)
            own = os.open(self._slot(ticket), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(own, fcntl.LOCK_EX)  # a fresh ticket's slot is never held by anyone else
            return ticket, own
        finally:
            os.close(entry)  # releases the entry lock

    @contextmanager
    def hold(self, timeout: float = 30.0):
        ticket, own = self._take_ticket()
        prev_path = self._slot(ticket - 1)
        prev = os.open(prev_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock_with_timeout(prev, timeout)
        except WriterLockTimeout:
            # Leave the queue. Closing our slot lets our successor in early; SQLite's own lock still
            # keeps writers apart, only the strict order is lost for that moment.
            os.close(prev)
            os.close(own)
            raise
        os.close(prev)
        try:
            os.unlink(prev_path)  # only our ticket ever waits on the previous slot
        except FileNotFoundError:
            pass
        try:
            yield ticket
        finally:
            os.close(own)  # wakes the next ticket


def _flock_with_timeout(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WriterLockTimeout(
                    f"the punch log was busy for more than {timeout:.0f} s; another process holds it"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
