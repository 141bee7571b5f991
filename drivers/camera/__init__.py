"""Camera capture: source kinds behind one interface, chosen from an explicit registry, under one grabber.

    base.py       the Source interface, SourceError, SourceEnded
    registry.py   kind name -> class (`[camera] kind`, or guessed from `[camera] source`) and open_source()
    opencv.py     live cameras through OpenCV: V4L2 index or /dev/videoN ("opencv"), GStreamer pipelines
    picamera2.py  the Pi camera module (CSI) through Picamera2/libcamera ("picamera2"), with exposure controls
    detect.py     `source = "auto"`: the Pi camera if libcamera lists one, else a V4L2 device ("detect")
    fakes/        the picamera2 library's emulation, for machines without a Pi camera (put it on sys.path)
    files.py      recordings replayed at a set rate: a video file ("video"), a folder of frames ("folder")
    grabber.py    Camera: the threaded latest-frame grabber with fault reports and reconnection

Callers use the names below (`from drivers import camera`); a new kind is registered in registry.py only.
"""

from drivers.camera.base import Source, SourceEnded, SourceError
from drivers.camera.grabber import Camera, CameraFault, CameraSettings, Frame, from_settings
from drivers.camera.registry import AUTO, KINDS, open_source

__all__ = ["AUTO", "KINDS", "Camera", "CameraFault", "CameraSettings", "Frame", "Source", "SourceEnded",
           "SourceError", "from_settings", "open_source"]
