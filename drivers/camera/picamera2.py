"""The Raspberry Pi camera module (CSI) through Picamera2, the library Raspberry Pi OS ships over libcamera.

Why a source of its own: on Raspberry Pi OS the CSI camera is driven by libcamera, and the pip build of
OpenCV cannot open it (no libcamera, no GStreamer). python3-picamera2 comes from the OS's apt repository, not
from PyPI, so install-pi.sh makes the virtual environment with --system-site-packages and this module imports
it at open(): a terminal without it gets a camera fault saying what to install, never another camera.

`[camera] source = "picamera2"` (or "picamera2:N" for camera N) selects it. The dim-corridor settings of the
camera section map onto libcamera controls (Picamera2 `set_controls`):

    exposure = "auto"      AeEnable=True, AeExposureMode from exposure_mode (normal, short, long)
    exposure = 30000       AeEnable=False, ExposureTime=30000 (microseconds)
    analogue_gain = 4.0    AnalogueGain=4.0 (0 = chosen by the auto-exposure)
    awb_mode = "indoor"    AwbMode=Indoor (auto, incandescent, tungsten, fluorescent, indoor, daylight, cloudy)

Frames are asked for in RGB888, which Picamera2 returns as [B, G, R] per pixel: OpenCV's order, no copy.
Every wait for a frame is bounded (READ_TIMEOUT): a camera whose requests stop completing is a SourceError
the grabber reports and reopens, not a hung thread.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import cv2
import numpy as np

from drivers.camera.base import Source, SourceError

PREFIX = "picamera2"
READ_TIMEOUT = 2.0  # seconds; a frame at the slowest frame rate we allow (0.5 fps) still arrives
FORMAT = "RGB888"
# libcamera's AwbModeEnum and AeExposureModeEnum (control_ids.yaml); Picamera2 accepts their integer values.
AWB_MODES = {"auto": 0, "incandescent": 1, "tungsten": 2, "fluorescent": 3, "indoor": 4, "daylight": 5,
             "cloudy": 6}
EXPOSURE_MODES = {"normal": 0, "short": 1, "long": 2}
INSTALL_HINT = ("install python3-picamera2 (sudo apt install python3-picamera2) and make the virtual "
                "environment with --system-site-packages (systemd/install-pi.sh does both)")
CABLE_HINT = ("check the ribbon cable (contacts facing the right way, latch closed), camera_auto_detect=1 "
              "in /boot/firmware/config.txt, and `rpicam-hello --list-cameras`")


def libcamera_controls(options: Mapping) -> dict:
    """The libcamera controls for the camera section's exposure and white-balance keys."""
    exposure = options.get("exposure", "auto")
    gain = float(options.get("analogue_gain") or 0.0)
    awb = options.get("awb_mode", "auto")
    mode = options.get("exposure_mode", "normal")
    if awb not in AWB_MODES:
        raise SourceError(f"[camera] awb_mode = {awb!r}: use one of {', '.join(AWB_MODES)}")
    if mode not in EXPOSURE_MODES:
        raise SourceError(f"[camera] exposure_mode = {mode!r}: use one of {', '.join(EXPOSURE_MODES)}")
    controls: dict = {"AwbEnable": True, "AwbMode": AWB_MODES[awb]}
    if exposure == "auto":
        controls.update(AeEnable=True, AeExposureMode=EXPOSURE_MODES[mode])
    else:
        controls.update(AeEnable=False, ExposureTime=int(exposure))
    if gain > 0:
        controls["AnalogueGain"] = gain
    return controls


def camera_number(spec: str) -> int:
    _, _, num = spec.partition(":")
    if not num:
        return 0
    if not num.isdigit():
        raise SourceError(f"[camera] source = {spec!r}: write picamera2 or picamera2:N (N = camera number)")
    return int(num)


def load_library():
    """The picamera2 module, or a SourceError that says how to install it."""
    try:
        return importlib.import_module("picamera2")
    except ModuleNotFoundError:
        raise SourceError(f"the picamera2 library is not installed: {INSTALL_HINT}") from None


def csi_cameras(library) -> list[dict]:
    """The cameras libcamera found that are not USB webcams (those are better served by V4L2)."""
    try:
        cameras = library.Picamera2.global_camera_info()
    except Exception as e:  # libcamera itself failed: a fault with its words
        raise SourceError(f"libcamera cannot list the cameras: {type(e).__name__}: {e}") from None
    return [c for c in cameras if "/usb" not in str(c.get("Id", ""))]


class Picamera2Source(Source):
    """The CSI camera N through Picamera2, at the configured size and rate, with the corridor settings."""

    kind = "picamera2"
    describes = "the Pi camera (picamera2[:N])"

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0,
                 options: Mapping | None = None):
        super().__init__(spec, width, height, fps, options)
        self.controls = libcamera_controls(self.options)
        self.number = camera_number(spec)
        self._cam = None
        self._format = FORMAT

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec == PREFIX or spec.startswith(PREFIX + ":")

    def open(self) -> None:
        library = load_library()
        found = csi_cameras(library)
        if self.number >= len(found):
            raise SourceError(f"no Pi camera {self.number} found by libcamera ({len(found)} attached): {CABLE_HINT}")
        try:
            cam = library.Picamera2(found[self.number]["Num"])
        except Exception as e:  # RuntimeError "Camera __init__ sequence did not complete." (busy or broken)
            raise SourceError(f"the Pi camera cannot be opened ({e}): is another program using it? "
                              f"Otherwise {CABLE_HINT}") from None
        try:
            self._start(cam)
        except Exception as e:
            cam.close()
            raise SourceError(f"the Pi camera refused its configuration: {type(e).__name__}: {e}") from None
        self._cam = cam

    def _start(self, cam) -> None:
        config = cam.create_preview_configuration(main={"size": (self.width, self.height), "format": FORMAT},
                                                  controls={"FrameRate": self.fps}, buffer_count=4)
        cam.configure(config)
        cam.set_controls(self.controls)
        cam.start()
        self._format = (getattr(cam, "camera_config", None) or config)["main"]["format"]

    def read(self) -> np.ndarray:
        if self._cam is None:
            raise SourceError("the Pi camera is not open")
        try:
            job = self._cam.capture_array("main", wait=False)
            array = self._cam.wait(job, timeout=READ_TIMEOUT)
        except TimeoutError:
            raise SourceError(f"the Pi camera delivered no frame for {READ_TIMEOUT:.0f} s: {CABLE_HINT}") from None
        except Exception as e:
            raise SourceError(f"the Pi camera failed: {type(e).__name__}: {e}") from None
        return to_bgr(array, self._format)

    def metadata(self) -> dict:
        """What libcamera reports for the last frame (ExposureTime, AnalogueGain, AeEnable, ...)."""
        return dict(self._cam.capture_metadata()) if self._cam is not None else {}

    def close(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            try:
                cam.stop()
            finally:
                cam.close()


def to_bgr(array: np.ndarray, fmt: str) -> np.ndarray:
    """A Picamera2 array in its stream format as the BGR image the pipeline expects."""
    if fmt == "RGB888":  # bytes B, G, R: already OpenCV's order
        return array
    if fmt == "BGR888":
        return cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if fmt == "XBGR8888":  # R, G, B, 255
        return cv2.cvtColor(array, cv2.COLOR_RGBA2BGR)
    if fmt == "XRGB8888":  # B, G, R, 255
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    raise SourceError(f"the Pi camera delivers {fmt}, which this source does not convert")
