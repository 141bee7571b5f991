"""`[camera] source = "auto"`: find the camera that is plugged in, so one configuration fits every terminal
of a regency, whether it has the Pi camera module or a USB webcam.

The order is fixed and short: a Pi camera (CSI) that libcamera lists → picamera2; else a V4L2 capture device
(the udev name /dev/presensi-camera first, then a uvcvideo capture node) → OpenCV. What was found is kept
for the life of the source: once the Pi camera was chosen, its failure is a camera fault until it works again,
never a silent switch to another camera. Only while nothing has been found yet does each reopen look again (a
camera plugged in later is found without a restart).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import numpy as np

from drivers.camera import picamera2
from drivers.camera.base import Source, SourceError
from drivers.camera.opencv import DeviceSource

log = logging.getLogger(__name__)

AUTO_SOURCE = "auto"
UDEV_NAME = "/dev/presensi-camera"  # systemd/60-presensi.rules: a USB webcam's capture node
V4L2_SYSFS = "/sys/class/video4linux"


def v4l2_devices(sysfs: str = V4L2_SYSFS, dev: str = "/dev") -> list[str]:
    """USB webcams' capture nodes, the udev name first (it survives replugging). A Pi has other V4L2 nodes
    that are no camera (the codec, the ISP: /dev/video10-31) and a webcam has a metadata node beside its
    capture node; only a uvcvideo device's index-0 node is taken, as the udev rule does."""
    found = []
    for node in sorted(glob.glob(os.path.join(sysfs, "video*")), key=lambda p: (len(p), p)):
        driver = os.path.basename(os.path.realpath(os.path.join(node, "device", "driver")))
        try:
            index = Path(node, "index").read_text().strip()
        except OSError:
            index = "0"
        if driver == "uvcvideo" and index == "0":
            found.append(os.path.join(dev, os.path.basename(node)))
    udev = os.path.join(dev, os.path.basename(UDEV_NAME))
    return ([udev] if os.path.exists(udev) else []) + found


def choose(csi_present: bool, devices: list[str]) -> str:
    """The `[camera] source` spelling of the camera to use; SourceError when there is none."""
    if csi_present:
        return picamera2.PREFIX
    if devices:
        return devices[0]
    raise SourceError("no camera found: libcamera lists no Pi camera and there is no USB webcam (uvcvideo); "
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
