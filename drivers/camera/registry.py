"""Which source class serves `[camera] source`: the one place a camera source kind is registered.

    from drivers.camera.registry import open_source
    source = open_source(cfg.camera.source, width, height, fps, kind=cfg.camera.kind)

`kind = "auto"` (the default) picks the first kind in KINDS whose `claims(source)` holds, so every
spelling of `[camera] source` that worked before still does (an index, /dev/videoN, a pipeline with "!",
a folder, a video file). A named kind skips the guess: a frame folder that does not exist yet is then a
fault that clears when it appears, not a configuration error. `source = "picamera2"` is the Pi camera
module (picamera2.py), and `source = "auto"` finds what is plugged in (detect.py). To add a kind: implement
base.Source in a module of its own beside opencv.py and add it to KINDS, before any kind whose claims()
would also accept its spelling.
"""

from __future__ import annotations

from collections.abc import Mapping

from drivers.camera.base import Source, SourceError
from drivers.camera.detect import DetectedSource
from drivers.camera.files import FolderSource, VideoFileSource
from drivers.camera.opencv import DeviceSource, GStreamerSource
from drivers.camera.picamera2 import Picamera2Source

AUTO = "auto"

# In the order auto-detection tries them: live spellings first, then what exists on disk.
KINDS: dict[str, type[Source]] = {
    "detect": DetectedSource,
    "picamera2": Picamera2Source,
    "opencv": DeviceSource,
    "gstreamer": GStreamerSource,
    "folder": FolderSource,
    "video": VideoFileSource,
}


def source_class(spec: str, kind: str = AUTO) -> type[Source]:
    if kind == AUTO:
        for cls in KINDS.values():
            if cls.claims(spec):
                return cls
        *first, last = [cls.describes for cls in KINDS.values()]
        raise SourceError(f"{spec}: not {', '.join(first)} or {last} (or name it with [camera] kind)")
    try:
        return KINDS[kind]
    except KeyError:
        raise SourceError(f"[camera] kind = {kind!r} is not a known camera source kind; use one of: "
                          f"{', '.join([AUTO, *KINDS])}") from None


def open_source(spec: str, width: int = 640, height: int = 480, fps: float = 15.0, kind: str = AUTO,
                options: Mapping | None = None) -> Source:
    """The source for a `[camera] source` string, of the named kind or the kind its spelling says; options
    are the settings only some kinds use (the Pi camera's exposure and white balance)."""
    spec = str(spec).strip()
    return source_class(spec, kind)(spec, width, height, fps, options)
