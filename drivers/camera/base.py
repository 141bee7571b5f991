"""What the grabber needs from a camera source, whatever delivers the frames: the interface every source
kind implements (registry.py picks one by `[camera] kind`, or from the `[camera] source` string).

A source is opened, read one frame at a time and closed, from the grabber's thread only; it never has to be
thread-safe. It reports trouble by raising: SourceError when it cannot deliver now (the grabber reports a
"disconnected" fault and reopens it with back-off), SourceEnded when a recording has no more frames.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

import numpy as np


class SourceError(Exception):
    """The source cannot deliver frames now (device gone, cannot open, file unreadable)."""


class SourceEnded(SourceError):
    """A file source has no more frames (a folder may get more later)."""


class Source(abc.ABC):
    #: the name under which registry.KINDS lists the class (the value of `[camera] kind`)
    kind: ClassVar[str]
    #: what the kind is, for the error that lists the kinds
    describes: ClassVar[str]
    #: a recording (file, folder): the grabber delivers it at `fps` and it may end; a live camera is not paced
    paced: ClassVar[bool] = False
    #: a recording that starts again from its beginning after it ended (a video file)
    rewinds: ClassVar[bool] = False

    def __init__(self, spec: str, width: int = 640, height: int = 480, fps: float = 15.0,
                 options: Mapping | None = None):
        self.spec, self.width, self.height, self.fps = spec, width, height, fps
        # settings only some kinds use (the Pi camera's exposure and white balance); the others ignore them
        self.options = dict(options or {})

    @classmethod
    @abc.abstractmethod
    def claims(cls, spec: str) -> bool:
        """Whether a `[camera] source` string means this kind (used when `[camera] kind = "auto"`)."""

    @abc.abstractmethod
    def open(self) -> None:
        """Start delivering; raises SourceError (with what to check) when it cannot."""

    @abc.abstractmethod
    def read(self) -> np.ndarray:
        """The next frame (BGR or grey); raises SourceError or SourceEnded."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device or file; open() may follow again."""
