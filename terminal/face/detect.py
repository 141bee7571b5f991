"""Face detectors behind one interface, chosen from an explicit registry by ``[face] detector``.

``detect(image_bgr) -> list[Face]`` in the image's own coordinates. Detection may run on a downscaled
copy (``detect_width``): detection cost grows with pixel count, and a terminal's faces are large.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import dlib
import numpy as np

from terminal.face.types import Face

# Images whose longer side is below this are upsampled once for HOG: its window is 80x80 pixels, so
# the faces in small stills (LFW's 250x250 photos, thumbnails) would otherwise be missed.
HOG_UPSAMPLE_BELOW = 400


class DetectorError(Exception):
    """The detector cannot be set up (missing model file etc.); the message says what to do."""


def _downscale(image: np.ndarray, width: int | None) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    if not width or w <= width:
        return image, 1.0
    factor = w / width
    small = cv2.resize(image, (width, round(h / factor)), interpolation=cv2.INTER_AREA)
    return small, factor


class HogDetector:
    """dlib's HOG + linear SVM frontal detector: needs nothing beyond PyPI. Eye and nose points are
    estimated from the box here; the 5-point landmark model refines them (see landmarks.py)."""

    name = "hog"

    def __init__(self, detect_width: int | None = None):
        self._detector = dlib.get_frontal_face_detector()
        self.detect_width = detect_width

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        small, factor = _downscale(image_bgr, self.detect_width)
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB) if small.ndim == 3 else small
        upsample = 1 if max(small.shape[:2]) < HOG_UPSAMPLE_BELOW else 0
        rects, scores, _ = self._detector.run(rgb, upsample, 0.0)
        faces = [_face_from_box(r.left(), r.top(), r.width(), r.height(), float(s))
                 for r, s in zip(rects, scores, strict=True)]
        return [f.scaled(factor) if factor != 1.0 else f for f in faces]


def _face_from_box(x, y, w, h, score) -> Face:
    # Typical positions in a HOG box; replaced by the landmark model's points before any use that matters.
    return Face(box=(int(x), int(y), int(w), int(h)), score=score,
                left_eye=(x + 0.70 * w, y + 0.38 * h), right_eye=(x + 0.30 * w, y + 0.38 * h),
                nose=(x + 0.5 * w, y + 0.62 * h))


class YuNetDetector:
    """OpenCV's YuNet CNN via cv2.FaceDetectorYN: faster than HOG and gives 5 landmarks itself."""

    name = "yunet"

    def __init__(self, model_path: str, detect_width: int | None = None, score_threshold: float = 0.6):
        if not model_path:
            raise DetectorError("[face] detector = \"yunet\" needs [face] yunet_model (path of the .onnx file)")
        if not Path(model_path).is_file():
            raise DetectorError(f"{model_path}: YuNet model file not found; set [face] yunet_model to its path")
        try:
            self._net = cv2.FaceDetectorYN.create(model_path, "", (320, 240), score_threshold, 0.3, 5000)
        except cv2.error as e:
            raise DetectorError(f"{model_path}: cannot load the YuNet model ({e.err}); is it the right file?") from None
        self.detect_width = detect_width

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        small, factor = _downscale(image_bgr, self.detect_width)
        if small.ndim == 2:
            small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
        h, w = small.shape[:2]
        self._net.setInputSize((w, h))
        _, rows = self._net.detect(small)
        faces = []
        for row in [] if rows is None else rows:
            pts = row[4:14].reshape(5, 2)
            # YuNet's order: right eye, left eye (the subject's), nose tip, right and left mouth corners.
            face = Face(box=tuple(int(round(v)) for v in row[:4]), score=float(row[14]),
                        left_eye=tuple(pts[1]), right_eye=tuple(pts[0]), nose=tuple(pts[2]), landmarks=pts)
            faces.append(face.scaled(factor) if factor != 1.0 else face)
        return faces


def _make_hog(face_cfg) -> HogDetector:
    return HogDetector(getattr(face_cfg, "detect_width", None))


def _make_yunet(face_cfg) -> YuNetDetector:
    return YuNetDetector(face_cfg.yunet_model, getattr(face_cfg, "detect_width", None))


DETECTORS: dict[str, Callable[[object], object]] = {"hog": _make_hog, "yunet": _make_yunet}


def from_config(face_cfg):
    """The detector named by ``[face] detector``; YuNet is used whenever ``yunet_model`` is set."""
    name = "yunet" if face_cfg.yunet_model else face_cfg.detector
    try:
        return DETECTORS[name](face_cfg)
    except KeyError:
        raise DetectorError(f"unknown face detector {name!r}; use one of {', '.join(DETECTORS)}") from None
