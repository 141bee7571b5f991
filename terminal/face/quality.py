"""The quality gate: only faces worth embedding are embedded (size, sharpness, frontal pose, exposure).

Metrics are computed on the aligned 150x150 chip where possible, so they do not depend on how far the
person stands from the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from terminal.face.types import Face


@dataclass(frozen=True)
class QualityLimits:
    min_face_px: int = 80
    min_sharpness: float = 12.0
    max_yaw: float = 0.35
    max_roll_deg: float = 25.0
    min_brightness: float = 50.0
    max_brightness: float = 210.0

    @classmethod
    def from_config(cls, face_cfg) -> QualityLimits:
        return cls(min_face_px=face_cfg.min_face_px, min_sharpness=face_cfg.min_sharpness,
                   max_yaw=face_cfg.max_yaw, min_brightness=face_cfg.min_brightness,
                   max_brightness=face_cfg.max_brightness)


@dataclass
class Quality:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def yaw_ratio(face: Face) -> float:
    """Horizontal offset of the nose from the eyes' midpoint, in eye distances, along the eye line.

    About 0 for a frontal face; beyond roughly +-0.35 the head is turned more than about 25 degrees.
    """
    (lx, ly), (rx, ry), (nx, ny) = face.left_eye, face.right_eye, face.nose
    ex, ey = lx - rx, ly - ry
    dist = math.hypot(ex, ey) or 1.0
    mx, my = (lx + rx) / 2, (ly + ry) / 2
    return ((nx - mx) * ex + (ny - my) * ey) / (dist * dist)


def roll_degrees(face: Face) -> float:
    (lx, ly), (rx, ry) = face.left_eye, face.right_eye
    return math.degrees(math.atan2(ly - ry, lx - rx))


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of the central part of the chip (the face, not its background)."""
    h, w = gray.shape[:2]
    core = gray[h // 6: h - h // 6, w // 6: w - w // 6]
    return float(cv2.Laplacian(core, cv2.CV_64F).var())


def assess(face: Face, chip_rgb: np.ndarray, limits: QualityLimits) -> Quality:
    gray = cv2.cvtColor(chip_rgb, cv2.COLOR_RGB2GRAY)
    h = gray.shape[0]
    core = gray[h // 6: h - h // 6, h // 6: h - h // 6]
    metrics = {
        "face_px": int(face.box[3]),
        "sharpness": round(sharpness(gray), 1),
        "yaw": round(float(yaw_ratio(face)), 3),
        "roll": round(roll_degrees(face), 1),
        "brightness": round(float(core.mean()), 1),
    }
    reasons = []
    if metrics["face_px"] < limits.min_face_px:
        reasons.append("too_small")
    if metrics["sharpness"] < limits.min_sharpness:
        reasons.append("blurred")
    if abs(metrics["yaw"]) > limits.max_yaw or abs(metrics["roll"]) > limits.max_roll_deg:
        reasons.append("not_frontal")
    if metrics["brightness"] < limits.min_brightness:
        reasons.append("too_dark")
    elif metrics["brightness"] > limits.max_brightness:
        reasons.append("too_bright")
    return Quality(ok=not reasons, reasons=reasons, metrics=metrics)
