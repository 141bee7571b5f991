"""Passive presentation-attack check: MiniFASNetV2 and MiniFASNetV1SE (minivision Silent-Face-Anti-Spoofing,
Apache-2.0, ONNX conversion pinned in terminal/liveness/modelfiles.py) run through cv2.dnn.

Preprocessing is what the models were trained with: a square-ish crop around the face box, enlarged by
the model's scale (2.7 for V2, 4.0 for V1SE), shifted (not padded) to stay inside the image, resized to
80x80, BGR, float 0-255 (not normalised), channels first. Output: 3 logits; softmax index 1 = real.
The two models' softmax vectors are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

INPUT_SIZE = 80
REAL_CLASS = 1


class ModelFileError(Exception):
    """A passive-check model file is missing or unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    crop_scale: float


V2 = ModelSpec("MiniFASNetV2", 2.7)
V1SE = ModelSpec("MiniFASNetV1SE", 4.0)


def crop_box(image_shape, box, scale: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) inclusive: the face box enlarged by `scale` about its centre, the scale
    reduced if the image is too small, and the box shifted back inside the image."""
    src_h, src_w = image_shape[:2]
    x, y, w, h = (float(v) for v in box)
    w, h = max(w, 1.0), max(h, 1.0)
    scale = min((src_h - 1) / h, (src_w - 1) / w, scale)
    new_w, new_h = w * scale, h * scale
    cx, cy = x + w / 2, y + h / 2
    left, top, right, bottom = cx - new_w / 2, cy - new_h / 2, cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > src_w - 1:
        left, right = left - (right - src_w + 1), src_w - 1.0
    if bottom > src_h - 1:
        top, bottom = top - (bottom - src_h + 1), src_h - 1.0
    return int(max(left, 0)), int(max(top, 0)), int(right), int(bottom)


def model_input(image_bgr: np.ndarray, box, scale: float) -> np.ndarray:
    """The 1x3x80x80 float32 blob one model expects."""
    left, top, right, bottom = crop_box(image_bgr.shape, box, scale)
    crop = image_bgr[top:bottom + 1, left:right + 1]
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    crop = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    return crop.astype(np.float32).transpose(2, 0, 1)[None]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def load_net(path: str | Path, spec: ModelSpec):
    """cv2.dnn network for one model file, checked with a dry run, or ModelFileError saying what to do."""
    path = Path(path)
    fix = "run `presensi models fetch` on a terminal with internet, or set the path in [liveness]"
    if not path.is_file():
        raise ModelFileError(f"{path}: {spec.name} model file not found; {fix}")
    try:
        net = cv2.dnn.readNetFromONNX(str(path))
        net.setInput(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32))
        out = net.forward()
    except cv2.error as e:
        raise ModelFileError(
            f"{path}: {spec.name} model file is corrupt or not an ONNX model ({str(e).strip().splitlines()[-1]}); "
            f"{fix} (it re-downloads and checks the sha256)"
        ) from None
    if out.size != 3:
        raise ModelFileError(f"{path}: not a {spec.name} model (gives {out.size} outputs, expected 3); {fix}")
    return net


class PassiveChecker:
    """Both models loaded once; ``score(frame, face)`` returns the fused real-face probability."""

    def __init__(self, v2_path: str | Path, v1se_path: str | Path):
        self._nets = [(V2, load_net(v2_path, V2)), (V1SE, load_net(v1se_path, V1SE))]

    def scores(self, image_bgr: np.ndarray, box) -> dict:
        """{"real": fused probability, "MiniFASNetV2": p, "MiniFASNetV1SE": p}."""
        probs = []
        out = {}
        for spec, net in self._nets:
            net.setInput(model_input(image_bgr, box, spec.crop_scale))
            p = _softmax(net.forward().reshape(-1).astype(np.float64))
            probs.append(p)
            out[spec.name] = float(p[REAL_CLASS])
        out["real"] = float(np.mean(probs, axis=0)[REAL_CLASS])
        return out
