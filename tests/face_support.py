"""Helpers for the face tests: real photos from ../shared/data, placed into camera-sized frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LFW = SHARED / "data" / "faces" / "lfw-dev"
EXAMPLES = SHARED / "data" / "faces" / "examples"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

needs_shared = pytest.mark.skipif(not LFW.is_dir(), reason=f"{SHARED} (shared test data) is not present")


def lfw(identity: str, n: int) -> Path:
    return LFW / identity / f"{identity}_{n:04d}.jpg"


def background(i: int = 0, size=(480, 640)) -> np.ndarray:
    """A static office-like background: a fixed gradient plus a little sensor noise per frame."""
    h, w = size
    base = np.tile(np.linspace(90, 150, w, dtype=np.float32), (h, 1))
    noise = np.random.default_rng(i).normal(0, 1.5, (h, w)).astype(np.float32)
    return np.clip(np.dstack([base, base * 0.95, base * 0.9]) + noise[..., None], 0, 255).astype(np.uint8)


def frame_with(photo: Path, i: int, scale: float = 1.6, size=(480, 640)) -> np.ndarray:
    """A 640x480 frame with the photo pasted in the middle, moved a few pixels per frame (a person
    standing in front of the terminal is never perfectly still)."""
    frame = background(i, size)
    img = cv2.imread(str(photo))
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    ph, pw = img.shape[:2]
    dx, dy = (i % 5) - 2, ((i // 2) % 5) - 2
    y0, x0 = (size[0] - ph) // 2 + dy, (size[1] - pw) // 2 + dx
    frame[y0:y0 + ph, x0:x0 + pw] = img
    return frame


def write_sequence(folder: Path, items: list) -> Path:
    """Write frames named in order: items are (photo or None for an empty scene, count)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for photo, count in items:
        for _ in range(count):
            frame = background(n) if photo is None else frame_with(photo, n)
            cv2.imwrite(str(folder / f"f{n:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
            n += 1
    return folder
