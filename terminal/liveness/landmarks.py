"""Eye and nose points the geometry can trust.

A detector that gives only a box (dlib's HOG) fills a C1 Face's eyes and nose with typical positions in
the box; those never move when the head turns. Faces without ``landmarks`` are therefore refined here
with dlib's 5-point model (face-recognition-models, the same file the face pipeline aligns with). YuNet
faces carry their own landmarks and are used as they are.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import cv2
import dlib
import face_recognition_models
import numpy as np


@functools.lru_cache(maxsize=1)
def _predictor():
    return dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())


def ensure(frame_bgr: np.ndarray, face):
    """The face itself if it has landmarks, else a copy with eyes and nose from the 5-point model."""
    if getattr(face, "landmarks", None) is not None:
        return face
    x, y, w, h = (int(round(v)) for v in face.box)
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB) if frame_bgr.ndim == 3 else frame_bgr
    shape = _predictor()(rgb, dlib.rectangle(x, y, x + w, y + h))
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    a, b = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)
    left, right = (a, b) if a[0] >= b[0] else (b, a)  # the subject's left eye is on the image's right
    fields = {"left_eye": tuple(left), "right_eye": tuple(right), "nose": tuple(pts[4])}
    try:
        return replace(face, landmarks=pts, **fields)
    except TypeError:  # not a dataclass: any object with the C1 attributes will do
        return _Refined(face.box, **fields)


class _Refined:
    def __init__(self, box, left_eye, right_eye, nose):
        self.box, self.left_eye, self.right_eye, self.nose, self.landmarks = box, left_eye, right_eye, nose, None
