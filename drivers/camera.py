"""Camera capture: OpenCV devices (index, /dev/videoN, GStreamer/libcamera pipeline strings) and file
sources (a video file or a folder of frames, replayed at a set frame rate), behind one threaded
latest-frame grabber that detects faults and reconnects by itself.

The grabber never makes its caller wait for the camera: ``latest()`` returns the newest frame at once
(or waits a bounded time for a newer one). Faults (no frames, black or frozen frames, device gone, file
ended) are reported through ``on_fault(CameraFault)`` and cleared through ``on_recover(kind)`` and show
in ``health()``. This module imports nothing from terminal/ or sync/.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".mjpeg", ".mjpg", ".webm")


class SourceError(Exception):
    """The source cannot deliver frames now (device gone, cannot open, file unreadable)."""


class SourceEnded(SourceError):
    """A file source has no more frames (a folder may get more later)."""


@dataclass(frozen=True)
class CameraFault:
    kind: str  # "disconnected", "stalled", "ended", "black", "frozen"
    message: str
    since: float  # time.monotonic() when the condition began


@dataclass
class Frame:
    image: np.ndarray
    seq: int
    t: float  # time.monotonic() when grabbed


# ---------------------------------------------------------------------------------------- sources
class DeviceSource:
    """A V4L2/GStreamer device through cv2.VideoCapture."""

    paced = False

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0):
        self.spec, self.width, self.height, self.fps = spec, width, height, fps
        self._cap = None

    def open(self) -> None:
        spec = self.spec
        # OpenCV would print a warning at every reconnection attempt; the fault report says it once.
        cv2.setLogLevel(2)  # 2 = errors only
        if "!" in spec:  # GStreamer (also libcamerasrc) pipeline, must end in appsink
            cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        elif spec.isdigit():
            cap = cv2.VideoCapture(int(spec), cv2.CAP_V4L2)
        else:
            if spec.startswith("/dev/") and not os.path.exists(spec):
                raise SourceError(f"{spec}: no such camera device (unplugged?)")
            cap = cv2.VideoCapture(spec, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {spec}: cannot open (check the cable, permissions and [camera] source)")
        if "!" not in spec:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> np.ndarray:
        ok, image = self._cap.read() if self._cap is not None else (False, None)
        if not ok or image is None:
            if self.spec.startswith("/dev/") and not os.path.exists(self.spec):
                raise SourceError(f"{self.spec}: camera device disappeared")
            raise SourceError(f"camera {self.spec}: read failed")
        return image

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource(DeviceSource):
    """A video file replayed at ``fps`` (the grabber paces it)."""

    paced = True

    def open(self) -> None:
        if not Path(self.spec).is_file():
            raise SourceError(f"{self.spec}: video file not found")
        cap = cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.spec}: cannot open the video file (unknown or damaged format)")
        self._cap = cap

    def read(self) -> np.ndarray:
        ok, image = self._cap.read() if self._cap is not None else (False, None)
        if not ok or image is None:
            raise SourceEnded(f"{self.spec}: end of video file")
        return image


class FolderSource:
    """Image files in a folder, in name order, replayed at ``fps``. Files added later are picked up,
    so a folder that runs dry 'ends' and resumes when new frames arrive; a removed folder is a
    disconnected device."""

    paced = True

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0):
        self.spec, self.fps = spec, fps
        self._done: set[str] = set()
        self._queue: list[str] = []

    def open(self) -> None:
        if not Path(self.spec).is_dir():
            raise SourceError(f"{self.spec}: frame folder not found")

    def read(self) -> np.ndarray:
        while True:
            if not self._queue:
                self._rescan()
            if not self._queue:
                raise SourceEnded(f"{self.spec}: no more frames in the folder")
            name = self._queue.pop(0)
            self._done.add(name)
            image = cv2.imread(os.path.join(self.spec, name), cv2.IMREAD_COLOR)
            if image is not None:  # unreadable files are skipped, not fatal
                return image

    def _rescan(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.spec) if n.lower().endswith(FRAME_SUFFIXES))
        except OSError:
            raise SourceError(f"{self.spec}: frame folder disappeared") from None
        self._queue = [n for n in names if n not in self._done]

    def close(self) -> None:
        pass


def open_source(spec: str, width: int = 640, height: int = 480, fps: float = 15.0):
    """The source for a ``[camera] source`` string: index, /dev/videoN, pipeline, video file or folder."""
    spec = str(spec).strip()
    if "!" in spec or spec.isdigit() or spec.startswith("/dev/"):
        return DeviceSource(spec, width, height, fps)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(spec, width, height, fps)
    if path.suffix.lower() in VIDEO_SUFFIXES or path.is_file():
        return VideoFileSource(spec, width, height, fps)
    raise SourceError(f"{spec}: not a camera index, /dev/videoN, GStreamer pipeline, video file or folder")


# ---------------------------------------------------------------------------------------- grabber
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

    source: object
    settings: CameraSettings = field(default_factory=CameraSettings)
    on_fault: Callable[[CameraFault], None] | None = None
    on_recover: Callable[[str], None] | None = None

    def __post_init__(self):
        self._lock = threading.Condition()
        self._frame: Frame | None = None
        self._seq = 0
        self._taken = 0  # highest seq handed to the consumer
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
            if getattr(self.source, "paced", False):
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
        if isinstance(self.source, VideoFileSource):  # replay from the start after a pause
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
            self._frame = Frame(image, self._seq, now)
            self._last_frame_t = now
            self.frames_grabbed += 1
            self._lock.notify_all()
        self._clear("disconnected", "stalled", "ended")

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
                  stop_at_end: bool = False, **callbacks) -> Camera:
    """A Camera for a configured source string (callbacks: on_fault, on_recover)."""
    source = open_source(spec, width, height, fps)
    settings = CameraSettings(stall_seconds=stall_seconds, stop_at_end=stop_at_end, fps=fps)
    return Camera(source, settings, **callbacks)
