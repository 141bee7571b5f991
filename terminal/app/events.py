"""An in-process event bus: the daemon publishes what the kiosk screen must show (decisions, prompts,
device state); the web server streams them to the page as Server-Sent Events.

Each subscriber gets a bounded queue; a slow or vanished browser loses old events, never blocks a punch.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    id: int
    type: str  # "decision", "prompt", "status", ...
    data: dict
    monotonic: float = field(default_factory=time.monotonic)


class EventBus:
    def __init__(self, backlog: int = 50):
        self._ids = itertools.count(1)
        self._subscribers: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self._last: dict[str, Event] = {}  # newest event of each type, for a page that connects later
        self._backlog = backlog

    def publish(self, type_: str, data: dict) -> Event:
        event = Event(next(self._ids), type_, data)
        with self._lock:
            self._last[type_] = event
            subscribers = list(self._subscribers)
        for q in subscribers:
            try:
                q.put_nowait(event)
            except queue.Full:  # drop the oldest: the screen wants the newest
                try:
                    q.get_nowait()
                    q.put_nowait(event)
                except (queue.Empty, queue.Full):
                    pass
        return event

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=self._backlog)
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            self._subscribers.discard(q)

    def last(self, type_: str) -> Event | None:
        with self._lock:
            return self._last.get(type_)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)
