"""An emulation of the picamera2 library (Raspberry Pi OS's python3-picamera2, over libcamera), for machines
without a Pi camera: the part of its API a frame grabber uses, with the real library's behaviour.

Why it exists: the Pi camera module (CSI) is only reachable through libcamera, which needs the Pi's kernel
drivers and ISP; CI machines have neither. This module stands in for the library (not for our code), the
way gpiozero's MockFactory stands in for GPIO pins. Put drivers/camera/fakes on sys.path to use it.

What it reproduces (picamera2 0.3.x, as read from its source):
- ``Picamera2.global_camera_info()``: one dict per attached camera (Model, Location, Rotation, Id, Num).
- ``Picamera2(camera_num)``: IndexError when there is no such camera (the real one indexes
  global_camera_info()); RuntimeError "Camera __init__ sequence did not complete." when the camera cannot be
  acquired (already open elsewhere, or broken).
- ``create_preview_configuration`` / ``create_still_configuration`` (main stream XBGR8888 640x480 / BGR888
  at the sensor's full size by default), ``configure`` (refused while started), ``start`` (configures the
  preview configuration when none was given), ``stop``, ``close``.
- ``capture_array(name, wait)`` in the configured format: RGB888 is [B, G, R] per pixel, BGR888 [R, G, B],
  XBGR8888 [R, G, B, 255], XRGB8888 [B, G, R, 255]; with ``wait=False`` a job for ``wait(job, timeout)``,
  which raises TimeoutError when no frame arrives (a loose ribbon cable: requests stop completing).
- ``set_controls``: RuntimeError for a control the camera does not advertise; the values show in
  ``capture_metadata()`` from the next frame on.

The rig (what is plugged in) is module state, changed by ``attach``/``detach``/``stall``/``reset`` or, for a
separate process, by the environment at import: FAKE_PICAMERA2_FRAMES=<folder of images> attaches one camera
that shows those images in name order.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = ["Picamera2", "attach", "detach", "reset", "stall"]

FORMATS = ("RGB888", "BGR888", "XBGR8888", "XRGB8888")
CONTROLS = {  # name -> (min, max, default), as camera_controls reports them for an imx708
    "AeEnable": (False, True, None),
    "AeExposureMode": (0, 3, 0),
    "AwbEnable": (False, True, None),
    "AwbMode": (0, 7, 0),
    "ExposureTime": (26, 220417486, 20000),
    "AnalogueGain": (1.0, 16.0, None),
    "FrameDurationLimits": (33333, 120000, None),
    "Brightness": (-1.0, 1.0, 0.0),
}


@dataclass
class _Sensor:
    model: str
    frames: list[Path] | None  # images shown in turn; None = a grey test picture
    full_size: tuple[int, int] = (4608, 2592)
    broken: bool = False  # acquiring it fails (RuntimeError at Picamera2())
    usb: bool = False  # a UVC webcam, which libcamera lists too (its Id has /usb in it)
    stalled: threading.Event = field(default_factory=threading.Event)  # requests stop completing
    owner: object | None = None
    shown: int = 0

    def info(self, num: int) -> dict:
        where = "/base/scb/pcie@7d500000/pci@0,0/usb@0,0-1:1.0-046d:0825" if self.usb else \
            f"/base/soc/i2c0mux/i2c@{num}/{self.model}@1a"
        return {"Model": self.model, "Location": 2, "Rotation": 180, "Id": where, "Num": num}

    def picture(self) -> np.ndarray:
        """The next scene as RGB (what the sensor sees), before the stream's format is applied."""
        if not self.frames:
            return np.full((480, 640, 3), 128, np.uint8)
        path = self.frames[self.shown % len(self.frames)]
        self.shown += 1
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError(f"fake picamera2: cannot read {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_rig: list[_Sensor] = []
_lock = threading.Lock()


def attach(frames: str | os.PathLike | None = None, model: str = "imx708", broken: bool = False,
           usb: bool = False) -> int:
    """Plug in a camera that shows the images in the folder ``frames`` (name order); returns its number."""
    paths = None
    if frames is not None:
        paths = sorted(p for p in Path(frames).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with _lock:
        _rig.append(_Sensor(model, paths, broken=broken, usb=usb))
        return len(_rig) - 1


def detach(num: int = 0) -> None:
    """Unplug camera ``num``: an open Picamera2 on it gets no more frames (wait() times out)."""
    with _lock:
        sensor = _rig.pop(num)
    sensor.stalled.set()


def stall(num: int = 0, stalled: bool = True) -> None:
    """Frames from camera ``num`` stop (or resume), as with a loose ribbon cable."""
    (_rig[num].stalled.set if stalled else _rig[num].stalled.clear)()


def reset() -> None:
    with _lock:
        for sensor in _rig:
            sensor.stalled.set()
        _rig.clear()


class _Job:
    def __init__(self, produce):
        self._produce = produce

    def get_result(self, timeout: float | None = None):
        return self._produce(timeout)


class Picamera2:
    """The emulated camera object; one per opened camera, like the real class."""

    @staticmethod
    def global_camera_info() -> list[dict]:
        with _lock:
            return [s.info(i) for i, s in enumerate(_rig)]

    def __init__(self, camera_num: int = 0, tuning=None, allocator=None):
        self.is_open, self.started = False, False
        self.camera_config: dict | None = None
        num = self.global_camera_info()[camera_num]["Num"]  # IndexError without that camera, as the real one
        with _lock:
            sensor = _rig[num]
            if sensor.broken or sensor.owner is not None:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            sensor.owner = self
        self._sensor, self.camera_idx, self.is_open = sensor, num, True
        self._controls: dict = {}
        self._metadata: dict = {}
        self._last_frame = 0.0

    @property
    def camera_controls(self) -> dict:
        return dict(CONTROLS)

    # -- configurations
    def _configuration(self, use_case: str, main: dict | None, controls: dict | None, fmt: str,
                       size: tuple[int, int], buffer_count: int) -> dict:
        stream = {"format": fmt, "size": size, **(main or {})}
        stream["size"] = tuple(stream["size"])
        return {"use_case": use_case, "main": stream, "lores": None, "raw": None,
                "controls": dict(controls or {}), "buffer_count": buffer_count}

    def create_preview_configuration(self, main=None, lores=None, raw=None, transform=None, colour_space=None,
                                     buffer_count=4, controls=None, display="main", encode="main", queue=True,
                                     sensor=None, use_case="preview") -> dict:
        return self._configuration(use_case, main, controls, "XBGR8888", (640, 480), buffer_count)

    def create_still_configuration(self, main=None, lores=None, raw=None, transform=None, colour_space=None,
                                   buffer_count=1, controls=None, display=None, encode=None, queue=True,
                                   sensor=None, use_case="still") -> dict:
        return self._configuration(use_case, main, controls, "BGR888", self._sensor.full_size, buffer_count)

    def configure(self, camera_config=None) -> None:
        self._check_open()
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = camera_config or self.create_preview_configuration()
        if config["main"]["format"] not in FORMATS:
            raise RuntimeError(f"Format {config['main']['format']} not supported by the fake picamera2")
        width, height = config["main"]["size"]
        if width < 16 or height < 16 or width > self._sensor.full_size[0] or height > self._sensor.full_size[1]:
            raise RuntimeError(f"Invalid stream size {width}x{height}")
        self.camera_config = config
        self._controls = {}
        self.set_controls({k: v for k, v in config["controls"].items() if k != "FrameRate"})
        rate = config["controls"].get("FrameRate")
        if rate:
            self._controls["FrameDurationLimits"] = (int(1e6 / rate), int(1e6 / rate))

    def start(self, config=None, show_preview=False) -> None:
        self._check_open()
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            self.configure(self.create_preview_configuration())
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        with _lock:
            if self._sensor.owner is self:
                self._sensor.owner = None
        self.is_open = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- controls
    def set_controls(self, controls: dict) -> None:
        for name, value in controls.items():
            if name not in CONTROLS:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
            low, high, _ = CONTROLS[name]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not isinstance(low, bool):
                value = type(low)(min(max(value, low), high))  # libcamera clamps to the advertised range
            self._controls[name] = value

    def capture_metadata(self, wait=None, signal_function=None) -> dict:
        return dict(self._metadata)

    # -- frames
    def capture_array(self, name: str = "main", wait=None, signal_function=None):
        if name != "main":
            raise KeyError(name)
        job = _Job(self._next_frame)
        return job if wait is False else job.get_result(None)

    def wait(self, job: _Job, timeout: float | None = None):
        return job.get_result(timeout)

    def _next_frame(self, timeout: float | None) -> np.ndarray:
        self._check_open()
        if not self.started:
            raise RuntimeError("Camera is not running")
        limits = self._controls.get("FrameDurationLimits", (33333, 33333))
        due = self._last_frame + limits[0] / 1e6
        if self._sensor.stalled.wait(max(0.0, due - time.monotonic())):
            # no request completes: the real library's job waits until its timeout, or for ever
            self._sensor.stalled.wait(timeout) if timeout is not None else threading.Event().wait()
            raise TimeoutError()
        self._last_frame = time.monotonic()
        frame = self._format(self._sensor.picture())
        self._metadata = {"SensorTimestamp": time.monotonic_ns(),
                          "ExposureTime": int(self._controls.get("ExposureTime", CONTROLS["ExposureTime"][2])),
                          "AnalogueGain": float(self._controls.get("AnalogueGain", 1.0)),
                          **{k: v for k, v in self._controls.items() if k in ("AeEnable", "AwbMode",
                                                                                 "AeExposureMode")}}
        return frame

    def _format(self, rgb: np.ndarray) -> np.ndarray:
        stream = self.camera_config["main"]
        rgb = cv2.resize(rgb, tuple(stream["size"]), interpolation=cv2.INTER_AREA)
        fmt = stream["format"]
        if fmt == "BGR888":  # libcamera names the order of the bytes in a 32-bit word: BGR888 is R, G, B
            return rgb
        if fmt == "RGB888":
            return rgb[:, :, ::-1].copy()
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        return np.concatenate([rgb if fmt == "XBGR8888" else rgb[:, :, ::-1], alpha], axis=2)

    def _check_open(self) -> None:
        if not self.is_open:
            raise RuntimeError("Camera is closed")


if os.environ.get("FAKE_PICAMERA2_FRAMES"):
    attach(os.environ["FAKE_PICAMERA2_FRAMES"])
