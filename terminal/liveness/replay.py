"""What a replayed picture leaves behind, measured between frames of one attempt.

- frozen: a picture fed as identical frames (a still image, a paused video through a file source) has
  no sensor noise at all; a real camera never delivers two identical frames of a real scene.
- planar: a photo or screen is flat, so two views of it are related by one homography. A head that
  turned is not: the nose moves against the cheeks and eyes. We fit a homography from the baseline face
  to the face at the end of the challenge by dense alignment (ECC, initialised from the eyes only) and
  check how well it explains the texture and whether it also puts the nose where it is now.
- moire: the share of high-frequency spectral energy in isolated peaks (screen pixel grids beat against
  the camera's sensor grid). Recorded for field calibration only; no threshold is applied to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PATCH = 96  # side of the aligned face patch the texture checks work on (pixels)


def face_patch(frame_bgr: np.ndarray, box, enlarge: float = 1.0, size: int = PATCH) -> np.ndarray:
    """Grayscale float32 square patch around the face box (enlarged), resized to size x size."""
    gray = frame_bgr if frame_bgr.ndim == 2 else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    x, y, w, h = box
    side = max(w, h) * enlarge
    cx, cy = x + w / 2.0, y + h / 2.0
    m = np.array([[size / side, 0, size / 2 - cx * size / side],
                  [0, size / side, size / 2 - cy * size / side]], np.float32)
    return cv2.warpAffine(gray, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
                          ).astype(np.float32)


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference between two face patches (0 = identical)."""
    return float(np.mean(np.abs(a - b)))


@dataclass(frozen=True)
class Planarity:
    correlation: float | None  # ECC correlation after the best homography (1 = a perfect fit)
    nose_error: float | None   # |H(nose_baseline) - nose_now| / eye distance

    def is_planar(self, min_correlation: float, max_nose_error: float) -> bool:
        return (self.correlation is not None and self.correlation >= min_correlation
                and self.nose_error is not None and self.nose_error <= max_nose_error)

    def as_dict(self) -> dict:
        return {"correlation": None if self.correlation is None else round(self.correlation, 4),
                "nose_error": None if self.nose_error is None else round(self.nose_error, 4)}


def _similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """3x3 similarity mapping two points onto two points."""
    s0, s1 = src_pts
    d0, d1 = dst_pts
    sv, dv = s1 - s0, d1 - d0
    scale = np.hypot(*dv) / max(np.hypot(*sv), 1e-6)
    angle = np.arctan2(dv[1], dv[0]) - np.arctan2(sv[1], sv[0])
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    t = d0 - rot @ s0
    return np.array([[c, -s, t[0]], [s, c, t[1]], [0, 0, 1]], np.float64)


def planarity(frame_a, face_a, frame_b, face_b, size: int = PATCH, enlarge: float = 1.1) -> Planarity:
    """How well one homography maps the baseline face (a) onto the current face (b): the best of dense
    alignments started from the eyes alone and from the eyes and nose."""
    x, y, w, h = face_a.box
    side = max(w, h) * enlarge
    cx, cy = x + w / 2.0, y + h / 2.0
    k = size / side
    patch_to_a = np.array([[1 / k, 0, cx - size / 2 / k], [0, 1 / k, cy - size / 2 / k], [0, 0, 1]])
    iod_a = float(np.hypot(*np.subtract(face_a.left_eye, face_a.right_eye)))
    iod_b = float(np.hypot(*np.subtract(face_b.left_eye, face_b.right_eye)))
    kb = k * iod_a / max(iod_b, 1e-6)  # b resampled to the patch's resolution: ECC compares like with like
    # Only the neighbourhood of face b, at the patch's resolution (ECC filters its whole input image).
    gray_b = frame_b if frame_b.ndim == 2 else cv2.cvtColor(frame_b, cv2.COLOR_BGR2GRAY)
    bx, by, bw, bh = face_b.box
    half = max(bw, bh) * enlarge * 1.5
    x0, y0 = max(int(bx + bw / 2 - half), 0), max(int(by + bh / 2 - half), 0)
    region = gray_b[y0:int(by + bh / 2 + half) + 1, x0:int(bx + bw / 2 + half) + 1]
    if region.size == 0:
        return Planarity(None, None)
    to_small_b = np.diag([kb, kb, 1.0]) @ np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
    small_b = cv2.resize(region, (max(int(region.shape[1] * kb), 8), max(int(region.shape[0] * kb), 8)),
                         interpolation=cv2.INTER_AREA).astype(np.float32)
    template = face_patch(frame_a, face_a.box, enlarge, size)
    pts_a = np.array([face_a.right_eye, face_a.left_eye, face_a.nose], float)
    pts_b = np.array([face_b.right_eye, face_b.left_eye, face_b.nose], float)
    affine = np.vstack([cv2.getAffineTransform(pts_a.astype(np.float32), pts_b.astype(np.float32)), [0, 0, 1]])
    best = (None, None)
    for start in (_similarity(pts_a[:2], pts_b[:2]), affine):
        cc, warp = _ecc(template, small_b, to_small_b @ start @ patch_to_a)
        if cc is not None and (best[0] is None or cc > best[0]):
            best = (cc, np.linalg.inv(to_small_b) @ warp @ np.linalg.inv(patch_to_a))
    cc, full = best
    if cc is None:
        return Planarity(None, None)
    nose = full @ np.array([*face_a.nose, 1.0])
    if abs(nose[2]) < 1e-9:
        return Planarity(float(cc), None)
    err = float(np.hypot(*(nose[:2] / nose[2] - np.asarray(face_b.nose, float)))) / max(iod_b, 1e-6)
    return Planarity(float(cc), err)


def _ecc(template: np.ndarray, image: np.ndarray, warp: np.ndarray) -> tuple[float | None, np.ndarray | None]:
    """ECC homography from template to image, coarse to fine; (correlation, warp) or (None, None)."""
    cc = None
    for level in (0.5, 1.0):
        scale = np.diag([level, level, 1.0])
        t = template if level == 1.0 else cv2.resize(template, None, fx=level, fy=level, interpolation=cv2.INTER_AREA)
        b = image if level == 1.0 else cv2.resize(image, None, fx=level, fy=level, interpolation=cv2.INTER_AREA)
        init = scale @ warp @ np.linalg.inv(scale)
        try:
            cc, found = cv2.findTransformECC(t, b, (init / init[2, 2]).astype(np.float32),
                                             cv2.MOTION_HOMOGRAPHY, _ECC_CRITERIA, None, 5)
        except cv2.error:
            return None, None
        warp = np.linalg.inv(scale) @ found.astype(np.float64) @ scale
    return float(cc), warp


_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)


def moire_score(frame_bgr: np.ndarray, box) -> float:
    """Peak-to-median ratio of the high-frequency spectrum of the face (log10). Higher = more periodic."""
    patch = face_patch(frame_bgr, box, 0.8, 128)
    patch = patch - patch.mean()
    window = np.outer(np.hanning(128), np.hanning(128)).astype(np.float32)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(patch * window)))
    yy, xx = np.mgrid[-64:64, -64:64]
    r = np.hypot(xx, yy) / 64.0
    ring = spec[(r > 0.35) & (r < 0.95)]
    if ring.size == 0:
        return 0.0
    return float(np.log10((ring.max() + 1e-6) / (np.median(ring) + 1e-6)))
