"""Recorded sources, replayed at `[camera] fps`: a video file, or a folder of frames (the demo writes one;
`presensi scan` analyses recordings). They stand in for a camera in tests, the demo and field analysis."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from drivers.camera.base import Source, SourceEnded, SourceError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".mjpeg", ".mjpg", ".webm")


class VideoFileSource(Source):
    """A video file replayed at ``fps`` (the grabber paces it), from the start again after it ended."""

    kind = "video"
    describes = "a video file"
    paced = True
    rewinds = True

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0, options=None):
        super().__init__(spec, width, height, fps, options)
        self._cap = None

    @classmethod
    def claims(cls, spec: str) -> bool:
        path = Path(spec)
        return path.suffix.lower() in VIDEO_SUFFIXES or path.is_file()

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

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource(Source):
    """Image files in a folder, in name order, replayed at ``fps``. Files added later are picked up,
    so a folder that runs dry 'ends' and resumes when new frames arrive; a removed folder is a
    disconnected device."""

    kind = "folder"
    describes = "a folder of frames"
    paced = True

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0, options=None):
        super().__init__(spec, width, height, fps, options)
        self._done: set[str] = set()
        self._queue: list[str] = []

    @classmethod
    def claims(cls, spec: str) -> bool:
        return Path(spec).is_dir()

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
