"""Periodic jobs on the monotonic clock: one small thread per job.

apscheduler 3's interval trigger computes its next run time on the wall clock, so a backward step (a Pi
without RTC that boots in the past and is then corrected, or a wrong clock put right by NTP) delays every
job by the size of the step: the push and the time sample stop for hours exactly when they matter most.
Here each job waits on `threading.Event.wait`, which CPython times with CLOCK_MONOTONIC, so no step of
the wall clock moves a run. A run never overlaps itself (one thread per job); a run that takes longer than
the interval is followed by the next one at once (coalesced, as apscheduler's coalesce=True did).

`trigger(name)` runs a job now (e.g. the time sample when the central server is reachable again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("presensi.jobs")


@dataclass
class Job:
    name: str
    fn: Callable[[], object]
    interval: float
    first_delay: float
    runs: int = 0
    last_started: float | None = None  # monotonic
    wake: threading.Event = field(default_factory=threading.Event)


class MonotonicScheduler:
    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def add(self, name: str, fn: Callable[[], object], interval: float, first_delay: float = 0.0) -> None:
        if not interval > 0:
            raise ValueError(f"job {name}: the interval must be positive, not {interval!r}")
        self.jobs[name] = Job(name, fn, float(interval), max(0.0, float(first_delay)))

    def start(self) -> None:
        for job in self.jobs.values():
            t = threading.Thread(target=self._loop, args=(job,), name=f"job-{job.name}", daemon=True)
            t.start()
            self.threads.append(t)

    def trigger(self, name: str) -> None:
        """Run the job as soon as its thread is free (a run in progress finishes first)."""
        job = self.jobs.get(name)
        if job is not None:
            job.wake.set()

    def shutdown(self, timeout: float = 0.0) -> None:
        self.stop_event.set()
        for job in self.jobs.values():
            job.wake.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _loop(self, job: Job) -> None:
        delay = job.first_delay
        while not self.stop_event.is_set():
            job.wake.wait(delay)  # monotonic: a wall-clock step neither delays nor hastens it
            if self.stop_event.is_set():
                return
            job.wake.clear()
            started = time.monotonic()
            job.last_started = started
            try:
                job.fn()
            except Exception:  # a failing job must not end its thread: it runs again next interval
                log.exception("job %s failed", job.name)
            job.runs += 1
            delay = max(0.0, job.interval - (time.monotonic() - started))
