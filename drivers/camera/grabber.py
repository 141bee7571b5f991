"""The threaded latest-frame grabber over any camera source (base.Source): it detects faults and
reconnects by itself, whatever kind delivers the frames (registry.py picks the kind).

The grabber never makes its caller wait for the camera: ``latest()`` returns the newest frame at once
(or waits a bounded time for a newer one). Faults (no frames, black or frozen frames, device gone, file
ended) are reported through ``on_fault(CameraFault)`` and cleared through ``on_recover(kind)`` and show
in ``health()``. Nothing here knows a source kind: pacing and rewinding are the source's own flags.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from drivers.camera.base import Source, SourceEnded, SourceError
from drivers.camera.registry import AUTO, open_source


@dataclass(frozen=True)
class CameraFault:
    kind: str  # "disconnected", "stalled", "ended", "black", "frozen"
    message: str
    since: float  # time.monotonic() when the condition began


@dataclass
class Frame:
    image: np.ndarray
    seq: int
    t: float  # time.monotonic() when grabbed; a recording replayed losslessly: its place in the recording


@dataclass
class _Watch:
    black_since: float | None = None
    frozen_since: float | None = None
    last_thumb: np.ndarray | None = None


@dataclass
class CameraSettings:
    stall_seconds: float = 5.0
    black_seconds: float = 3.0
    frozen_seconds: float = 10.0
    black_level: float = 8.0
    reconnect_min: float = 0.2
    reconnect_max: float = 5.0
    stop_at_end: bool = False  # a file source that ends stops the grabber (presensi scan on a file)
    fps: float = 15.0
    lossless: bool = False  # never drop a frame: wait for the consumer (replaying files for analysis)


@dataclass
class Camera:
    """Threaded latest-frame grabber over one source. Start with ``start()``, stop with ``stop()``."""

    source: Source
    settings: CameraSettings = field(default_factory=CameraSettings)
    on_fault: Callable[[CameraFault], None] | None = None
    on_recover: Callable[[str], None] | None = None

    def __post_init__(self):
        self._lock = threading.Condition()
        self._frame: Frame | None = None
        self._seq = 0
        self._taken = 0  # highest seq handed to the consumer
        self._media_start: float | None = None  # a recording's first frame (lossless replay)
        self._faults: dict[str, CameraFault] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._opened = False
        self._last_frame_t = time.monotonic()
        self._watch = _Watch()
        self.ended = False  # stop_at_end and the source ran out
        self.frames_grabbed = 0

    # -- lifecycle
    def start(self) -> Camera:
        self._last_frame_t = time.monotonic()
        for target, name in ((self._run, "camera-grabber"), (self._watchdog, "camera-watchdog")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        self.source.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads if t.name == "camera-grabber")

    # -- consumer side
    def latest(self, after_seq: int = 0, timeout: float = 0.0) -> Frame | None:
        """The newest frame with seq > after_seq, waiting at most ``timeout`` seconds; None if none."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._frame is None or self._frame.seq <= after_seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set() or (self.ended and not self.running):
                    return None
                self._lock.wait(min(remaining, 0.1))
            self._taken = max(self._taken, self._frame.seq)
            self._lock.notify_all()
            return self._frame

    def faults(self) -> list[CameraFault]:
        with self._lock:
            return list(self._faults.values())

    def health(self) -> dict:
        faults = self.faults()
        return {"ok": not faults, "frames": self.frames_grabbed, "connected": self._opened,
                "seconds_since_frame": round(time.monotonic() - self._last_frame_t, 2),
                "faults": [{"kind": f.kind, "message": f.message} for f in faults]}

    # -- fault bookkeeping
    def _raise(self, kind: str, message: str) -> None:
        with self._lock:
            if kind in self._faults:
                return
            fault = self._faults[kind] = CameraFault(kind, message, time.monotonic())
        if self.on_fault:
            self.on_fault(fault)

    def _clear(self, *kinds: str) -> None:
        for kind in kinds:
            with self._lock:
                gone = self._faults.pop(kind, None)
            if gone is not None and self.on_recover:
                self.on_recover(kind)

    # -- grabber thread
    def _run(self) -> None:
        backoff = self.settings.reconnect_min
        next_due = time.monotonic()
        while not self._stop.is_set():
            if not self._opened:
                try:
                    self.source.open()
                    self._opened = True
                except Exception as e:  # SourceError, or a driver/OpenCV error: report, retry, never die
                    msg = str(e) if isinstance(e, SourceError) else f"camera open error: {type(e).__name__}: {e}"
                    self._raise("disconnected", msg)
                    backoff = self._sleep_backoff(backoff)
                    continue
            try:
                image = self.source.read()
            except SourceEnded as e:
                if self._on_end(e):
                    return
                backoff = self._sleep_backoff(backoff)
                continue
            except SourceError as e:
                self._raise("disconnected", str(e))
                self.source.close()
                self._opened = False
                backoff = self._sleep_backoff(backoff)
                continue
            except Exception as e:  # a driver bug must not kill the grabber silently
                self._raise("disconnected", f"camera read error: {type(e).__name__}: {e}")
                backoff = self._sleep_backoff(backoff)
                continue
            backoff = self.settings.reconnect_min
            self._publish(image)
            if self.source.paced:
                next_due = max(next_due + 1.0 / self.settings.fps, time.monotonic() - 1.0)
                self._stop.wait(max(0.0, next_due - time.monotonic()))

    def _on_end(self, e: SourceEnded) -> bool:
        """True = stop the grabber (stop_at_end)."""
        self._raise("ended", str(e))
        if self.settings.stop_at_end:
            self.ended = True
            with self._lock:
                self._lock.notify_all()
            return True
        if self.source.rewinds:  # replay from the start after a pause
            self.source.close()
            self._opened = False
        return False

    def _sleep_backoff(self, backoff: float) -> float:
        self._stop.wait(backoff)
        return min(backoff * 2, self.settings.reconnect_max)

    def _publish(self, image: np.ndarray) -> None:
        now = time.monotonic()
        self._check_picture(image, now)
        with self._lock:
            while self.settings.lossless and self._taken < self._seq and not self._stop.is_set():
                self._lock.wait(0.1)
                self._last_frame_t = time.monotonic()  # waiting for the consumer is not a stall
            self._seq += 1
            self._frame = Frame(image, self._seq, self._stamp(now))
            self._last_frame_t = now
            self.frames_grabbed += 1
            self._lock.notify_all()
        self._clear("disconnected", "stalled", "ended")

    def _stamp(self, now: float) -> float:
        """A frame's time. Live: when it was grabbed. A recording analysed frame by frame (lossless): its
        place in the recording (first frame + seq / fps), so what a recording shows takes as long as it was
        recorded for however slowly this machine works through it (a busy machine stretched a 3 s frontal
        pose past the liveness challenge's time limit)."""
        if not (self.settings.lossless and self.source.paced):
            return now
        if self._media_start is None:
            self._media_start = now
        return self._media_start + (self._seq - 1) / self.settings.fps

    def _check_picture(self, image: np.ndarray, now: float) -> None:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(gray, (32, 24), interpolation=cv2.INTER_AREA)
        w, s = self._watch, self.settings
        if float(thumb.mean()) < s.black_level:
            w.black_since = w.black_since or now
            if now - w.black_since >= s.black_seconds:
                self._raise("black", "the camera delivers black frames (lens covered, no light or sensor fault)")
        else:
            w.black_since = None
            self._clear("black")
        same = w.last_thumb is not None and np.array_equal(thumb, w.last_thumb)
        w.last_thumb = thumb
        if same:
            w.frozen_since = w.frozen_since or now
            if now - w.frozen_since >= s.frozen_seconds:
                self._raise("frozen", "the camera repeats the same frame (frozen picture)")
        else:
            w.frozen_since = None
            self._clear("frozen")

    def _watchdog(self) -> None:
        while not self._stop.wait(0.2):
            if self.ended:
                return
            idle = time.monotonic() - self._last_frame_t
            if idle >= self.settings.stall_seconds:
                self._raise("stalled", f"no frames from the camera for {idle:.0f} s")


def from_settings(spec: str, width: int, height: int, fps: float, stall_seconds: float,
                  stop_at_end: bool = False, kind: str = AUTO, options: dict | None = None, **callbacks) -> Camera:
    """A Camera for a configured source string and kind (callbacks: on_fault, on_recover)."""
    source = open_source(spec, width, height, fps, kind, options)
    settings = CameraSettings(stall_seconds=stall_seconds, stop_at_end=stop_at_end, fps=fps)
    return Camera(source, settings, **callbacks)
