"""Live cameras through OpenCV's cv2.VideoCapture: V4L2 devices (an index or /dev/videoN, USB webcams and
the Pi camera's V4L2 node) and GStreamer pipelines (also libcamerasrc), which must end in appsink."""

from __future__ import annotations

import os

import cv2
import numpy as np

from drivers.camera.base import Source, SourceError


class DeviceSource(Source):
    """A V4L2 device: "0" (an index) or "/dev/video0", "/dev/presensi-camera" (a udev symlink)."""

    kind = "opencv"
    describes = "a camera index or /dev/videoN"

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0, options=None):
        super().__init__(spec, width, height, fps, options)
        self._cap = None

    @classmethod
    def claims(cls, spec: str) -> bool:
        return "!" not in spec and (spec.isdigit() or spec.startswith("/dev/"))

    def open(self) -> None:
        # OpenCV would print a warning at every reconnection attempt; the fault report says it once.
        cv2.setLogLevel(2)  # 2 = errors only
        self._set_capture(self._capture())
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def _capture(self):
        spec = self.spec
        if spec.isdigit():
            return cv2.VideoCapture(int(spec), cv2.CAP_V4L2)
        if spec.startswith("/dev/") and not os.path.exists(spec):
            raise SourceError(f"{spec}: no such camera device (unplugged?)")
        return cv2.VideoCapture(spec, cv2.CAP_V4L2)

    def _set_capture(self, cap) -> None:
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.spec}: cannot open (check the cable, permissions and [camera] source)")
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


class GStreamerSource(DeviceSource):
    """A GStreamer pipeline string ("libcamerasrc ! video/x-raw,width=640 ! videoconvert ! appsink"): the
    pipeline sets size and rate itself."""

    kind = "gstreamer"
    describes = "a GStreamer pipeline ending in appsink"

    @classmethod
    def claims(cls, spec: str) -> bool:
        return "!" in spec

    def open(self) -> None:
        cv2.setLogLevel(2)
        self._set_capture(cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER))
