"""Still images: reading them with clear errors, and finding + embedding every face in one.

Used by ``presensi identify``, ``presensi enroll-photos`` and the LFW evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from terminal.face import embed as embed_mod
from terminal.face.quality import Quality, QualityLimits, assess
from terminal.face.types import Face

MAX_IMAGE_BYTES = 40 * 1024 * 1024
MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageError(Exception):
    """This image cannot be used; the message names the file and says why."""


def _kind(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_image(data: bytes, name: str = "<image>") -> np.ndarray:
    """Decode JPEG/PNG/BMP/WebP bytes to BGR, refusing truncated files (which OpenCV would silently pad)."""
    kind = _kind(data)
    if kind is None:
        raise ImageError(f"{name}: not an image (expected JPEG or PNG)")
    # OpenCV fills a truncated JPEG or PNG with grey and only warns, so check the end markers first.
    if kind == "jpeg" and b"\xff\xd9" not in data[-64:]:
        raise ImageError(f"{name}: truncated JPEG (the file ends early); copy it again")
    if kind == "png" and b"IEND" not in data[-16:]:
        raise ImageError(f"{name}: truncated PNG (the file ends early); copy it again")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: corrupt {kind.upper()} (cannot be decoded)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({image.shape[1]}x{image.shape[0]} pixels)")
    return image


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"{path}: file too large for an image ({size} bytes)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise ImageError(f"{path}: empty file")
    return decode_image(data, str(path))


@dataclass
class FaceResult:
    face: Face
    quality: Quality
    embedding: np.ndarray | None
    chip: np.ndarray


def analyse(image_bgr: np.ndarray, detector, limits: QualityLimits | None = None,
            embed: bool = True) -> list[FaceResult]:
    """Every face in the image, largest first, aligned, assessed and (if ``embed``) embedded."""
    faces = sorted(detector.detect(image_bgr), key=lambda f: f.box[2] * f.box[3], reverse=True)
    rgb = embed_mod.to_rgb(image_bgr)
    limits = limits or QualityLimits()
    results = []
    for face in faces:
        refined, chip = embed_mod.align(rgb, face)
        quality = assess(refined, chip, limits)
        emb = embed_mod.embed_chip(chip) if embed else None
        results.append(FaceResult(refined, quality, emb, chip))
    return results


def central_face(results: list[FaceResult], shape: tuple[int, ...]) -> FaceResult | None:
    """The face nearest the image centre (LFW photos are centred on their subject)."""
    if not results:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2

    def dist(r):
        x, y, w, h = r.face.box
        return (x + w / 2 - cx) ** 2 + (y + h / 2 - cy) ** 2

    return min(results, key=dist)
