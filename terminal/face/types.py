"""Types shared by the face pipeline and liveness (contract C1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]


@dataclass
class Face:
    """One detected face in image coordinates.

    ``left_eye`` is the subject's left eye, which appears on the image's right side.
    ``landmarks`` holds the detector's or landmark model's points (N x 2) when available.
    """

    box: tuple[int, int, int, int]  # x, y, w, h
    score: float
    left_eye: Point
    right_eye: Point
    nose: Point
    landmarks: np.ndarray | None = field(default=None, repr=False)

    @property
    def height(self) -> int:
        return self.box[3]

    def scaled(self, factor: float) -> Face:
        """The same face in an image `factor` times as large (detection runs on downscaled frames)."""
        x, y, w, h = self.box

        def sp(p):
            return (p[0] * factor, p[1] * factor)

        return Face(
            box=(round(x * factor), round(y * factor), round(w * factor), round(h * factor)),
            score=self.score, left_eye=sp(self.left_eye), right_eye=sp(self.right_eye), nose=sp(self.nose),
            landmarks=None if self.landmarks is None else self.landmarks * factor,
        )
