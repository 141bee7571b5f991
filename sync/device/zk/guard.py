"""What keeps port 4370 usable for the central server while someone on the office LAN attacks it.

Two things, both per client address (the only identity a ZK client has before it authenticates):
- `AuthThrottle`: comm-key checks are rationed. One check per MIN_INTERVAL at most (<= 10 tries/s), and
  after FREE_FAILURES wrong keys the interval doubles with each further failure up to MAX_DELAY, so
  the 10^6 possible keys take years, not the ~100 s one TCP session took before. A TCP client waits for
  its turn (the reply is late, never wrong: the right key still works, only slowly from a guessing
  address); a UDP client, served by one thread for everyone, gets ACK_UNAUTH unchecked while its address
  is backing off. Success resets the address; quiet addresses are forgotten.
- `SlotTable`: the session slots ([zk] max_sessions), at most [zk] max_sessions_per_address of them per
  address. When every slot is taken, a new client takes the slot of the oldest session that has not
  authenticated, from the address holding the most slots; so idle or half-open connections from one host
  can never lock the central server out. Unauthenticated TCP connections are also closed after
  [zk] handshake_seconds by the server.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MIN_INTERVAL = 0.1  # seconds between two comm-key checks of one address: at most 10 per second
FREE_FAILURES = 3  # a mistyped key now and then costs nothing beyond MIN_INTERVAL
MAX_DELAY = 30.0  # the back-off stops growing here (a misconfigured server retries every 30 s)
FORGET_AFTER = 900.0  # an address without failures for this long starts afresh
MAX_ADDRESSES = 4096  # bookkeeping is bounded whatever the number of addresses seen


@dataclass
class _Address:
    failures: int = 0
    next_check: float = 0.0  # monotonic time of the next check this address may have
    last_failure: float = 0.0


class AuthThrottle:
    """Rations comm-key checks per client address; thread-safe (TCP sessions run in their own threads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] | None = None):
        self.clock = clock
        self._sleep = sleep or time.sleep
        self._lock = threading.Lock()
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    def _entry(self, addr: str, now: float) -> _Address:
        entry = self._addresses.get(addr)
        if entry is not None and entry.failures and now - entry.last_failure > FORGET_AFTER:
            entry = None
        if entry is None:
            entry = _Address()
            self._addresses[addr] = entry
            while len(self._addresses) > MAX_ADDRESSES:
                self._addresses.popitem(last=False)
        self._addresses.move_to_end(addr)
        return entry

    def turn(self, addr: str, *, wait: bool) -> bool:
        """May `addr` have one key checked now? With wait=True, sleeps until its turn and returns True; each
        granted turn pushes the next one back by MIN_INTERVAL, so parallel sessions of one address share."""
        with self._lock:
            now = self.clock()
            entry = self._entry(addr, now)
            at = max(now, entry.next_check)
            if at > now and not wait:
                return False
            entry.next_check = at + MIN_INTERVAL
        if at > now:
            self._sleep(at - now)
        return True

    def failed(self, addr: str) -> float:
        """A wrong key from `addr`; returns the back-off (seconds) before its next check."""
        with self._lock:
            now = self.clock()
            entry = self._entry(addr, now)
            entry.failures += 1
            entry.last_failure = now
            delay = backoff(entry.failures)
            entry.next_check = max(entry.next_check, now + delay)
            return delay

    def succeeded(self, addr: str) -> None:
        with self._lock:
            self._addresses.pop(addr, None)

    def failures(self, addr: str) -> int:
        with self._lock:
            entry = self._addresses.get(addr)
            return entry.failures if entry else 0


def backoff(failures: int) -> float:
    """MIN_INTERVAL for the first FREE_FAILURES failures, then doubling up to MAX_DELAY."""
    return min(MIN_INTERVAL * 2 ** max(0, failures - FREE_FAILURES), MAX_DELAY)


@dataclass(eq=False)
class Slot:
    addr: str
    evict: Callable[[], None]  # ends the session from another thread (TCP: shut the socket down)
    started: float = field(default_factory=time.monotonic)
    authenticated: bool = False


class SlotTable:
    """The ZK session slots, shared by TCP connections and UDP sessions; thread-safe."""

    def __init__(self, total: int, per_address: int):
        self.total, self.per_address = total, min(per_address, total)
        self._slots: list[Slot] = []
        self._lock = threading.Lock()

    def take(self, addr: str, evict: Callable[[], None]) -> Slot | None:
        """A slot for a new session from `addr`, or None (refused: every slot is held by authenticated
        sessions, or `addr` holds its share of them)."""
        with self._lock:
            mine = [s for s in self._slots if s.addr == addr]
            victim = None
            if len(mine) >= self.per_address:
                victim = _oldest_unauthenticated(mine)
                if victim is None:
                    return None
            elif len(self._slots) >= self.total:
                victim = self._victim()
                if victim is None:
                    return None
            if victim is not None:
                self._slots.remove(victim)
            slot = Slot(addr, evict)
            self._slots.append(slot)
        if victim is not None:
            victim.evict()
        return slot

    def _victim(self) -> Slot | None:
        """The oldest unauthenticated session of the address holding the most slots (ties: any of them)."""
        counts: dict[str, int] = {}
        for s in self._slots:
            counts[s.addr] = counts.get(s.addr, 0) + 1
        for addr in sorted(counts, key=counts.get, reverse=True):
            victim = _oldest_unauthenticated([s for s in self._slots if s.addr == addr])
            if victim is not None:
                return victim
        return None

    def give(self, slot: Slot) -> None:
        """Idempotent: an evicted slot was already removed."""
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)

    def held(self, addr: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._slots if addr is None or s.addr == addr)


def _oldest_unauthenticated(slots: list[Slot]) -> Slot | None:
    waiting = [s for s in slots if not s.authenticated]
    return min(waiting, key=lambda s: s.started) if waiting else None
