"""Head pose cues from the three points every detector gives (contract C1: both eyes and the nose).

The nose sits in front of the eyes. When a head turns, the nose tip moves sideways relative to the eye
midpoint by roughly depth * sin(yaw), while a flat picture that is shifted, rotated in the image plane,
scaled, or turned about an axis through the face keeps the nose where it was relative to the eyes.
Measuring along the eye axis and dividing by the eye distance makes the value independent of in-plane
rotation, distance and image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pose:
    """Pose measurements of one face in one frame."""

    yaw: float        # nose offset along the eye axis / eye distance; > 0 = turned to the subject's left
    pitch: float      # nose distance below the eye line / eye distance (about 0.6-0.9 when frontal)
    roll_deg: float   # in-plane angle of the eye axis
    eye_distance: float  # pixels
    size: float       # face box height in pixels (distance cue for "come closer")
    center: tuple[float, float]


def measure(face) -> Pose:
    """Pose of any object with ``left_eye``, ``right_eye``, ``nose`` (x, y) and ``box`` (x, y, w, h)."""
    left = np.asarray(face.left_eye, dtype=float)
    right = np.asarray(face.right_eye, dtype=float)
    nose = np.asarray(face.nose, dtype=float)
    axis = left - right  # from the subject's right eye to their left eye
    iod = float(np.hypot(*axis))
    if iod < 1.0:
        raise ValueError("eyes coincide: not a usable face")
    unit = axis / iod
    normal = np.array([-unit[1], unit[0]])  # points down the face when the face is upright
    offset = nose - (left + right) / 2.0
    x, y, w, h = face.box
    return Pose(
        yaw=float(offset @ unit) / iod,
        pitch=float(offset @ normal) / iod,
        roll_deg=math.degrees(math.atan2(axis[1], axis[0])),
        eye_distance=iod,
        size=float(max(w, h)),
        center=(x + w / 2.0, y + h / 2.0),
    )
