"""`[camera] source = "auto"`: find the camera that is plugged in, so one configuration fits every terminal
of a regency, whether it has the Pi camera module or a USB webcam.

The order is fixed and short: a Pi camera (CSI) that libcamera lists → picamera2; else a V4L2 capture device
(the udev name /dev/presensi-camera first, then /dev/video*) → OpenCV. What was found is kept for the life of
the source: once the Pi camera was chosen, its failure is a camera fault until it works again, never a
silent switch to another camera. Only while nothing has been found yet does each reopen look again (a
camera plugged in later is found without a restart).
"""

from __future__ import annotations

import glob
import logging
import os

import numpy as np

from drivers.camera import picamera2
from drivers.camera.base import Source, SourceError
from drivers.camera.opencv import DeviceSource

log = logging.getLogger(__name__)

AUTO_SOURCE = "auto"
UDEV_NAME = "/dev/presensi-camera"  # systemd/60-presensi.rules: a USB webcam's capture node
V4L2_GLOB = "/dev/video*"


def v4l2_devices(pattern: str = V4L2_GLOB) -> list[str]:
    """Capture device paths, the udev name first (it survives replugging and skips metadata nodes)."""
    found = sorted(glob.glob(pattern), key=lambda p: (len(p), p))
    return ([UDEV_NAME] if os.path.exists(UDEV_NAME) else []) + found


def choose(csi_present: bool, devices: list[str]) -> str:
    """The `[camera] source` spelling of the camera to use; SourceError when there is none."""
    if csi_present:
        return picamera2.PREFIX
    if devices:
        return devices[0]
    raise SourceError("no camera found: libcamera lists no Pi camera and there is no USB webcam (/dev/video*); "
                      f"{picamera2.CABLE_HINT}, or plug the webcam in")


def csi_present() -> bool:
    """Whether libcamera sees a Pi camera; False without the picamera2 library (it cannot be driven then)."""
    try:
        library = picamera2.load_library()
    except SourceError:
        return False
    return bool(picamera2.csi_cameras(library))  # a broken libcamera raises: a fault, not "no camera"


class DetectedSource(Source):
    """Whichever camera is attached: the Pi camera if libcamera lists one, else the first V4L2 device."""

    kind = "detect"
    describes = "auto (the Pi camera if present, else a USB webcam)"

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0, options=None):
        super().__init__(spec, width, height, fps, options)
        self.chosen: Source | None = None

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec == AUTO_SOURCE

    def open(self) -> None:
        if self.chosen is None:
            spec = choose(csi_present(), v4l2_devices())
            cls = picamera2.Picamera2Source if spec == picamera2.PREFIX else DeviceSource
            self.chosen = cls(spec, self.width, self.height, self.fps, self.options)
            log.info("camera source auto: using %s (%s)", spec, self.chosen.kind)
        self.chosen.open()

    def read(self) -> np.ndarray:
        if self.chosen is None:
            raise SourceError("no camera has been found yet")
        return self.chosen.read()

    def close(self) -> None:
        if self.chosen is not None:
            self.chosen.close()
