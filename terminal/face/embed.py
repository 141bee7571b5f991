"""Landmarks (dlib's 5-point model), alignment and the 128-D embedding (dlib's ResNet), both from the
``face-recognition-models`` package. The 68-point model is deliberately not used (its training data
excludes commercial use).

The embedding is the expensive step (about 70-130 ms per face on x86, around a second on a Pi 4), and
dlib holds the GIL while computing it, so ``EmbeddingPool`` spreads it over worker processes.
"""

from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import cv2
import dlib
import face_recognition_models
import numpy as np

from terminal.face.types import Face

CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_DIM = 128


@functools.lru_cache(maxsize=1)
def _shape_predictor():
    return dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())


@functools.lru_cache(maxsize=1)
def _resnet():
    return dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())


def warm() -> None:
    """Load both models now (about a second) so the first face is not slower than the others."""
    _shape_predictor()
    _resnet()


def to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    if image_bgr.ndim == 2:
        return cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


def align(rgb: np.ndarray, face: Face) -> tuple[Face, np.ndarray]:
    """Refine the face's eye and nose points with the 5-point model and cut the aligned 150x150 chip."""
    x, y, w, h = face.box
    shape = _shape_predictor()(rgb, dlib.rectangle(int(x), int(y), int(x + w), int(y + h)))
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    # dlib's 5-point layout: 0-1 the subject's left eye corners (image right), 2-3 the right eye, 4 the nose.
    refined = Face(box=face.box, score=face.score, left_eye=tuple(pts[0:2].mean(axis=0)),
                   right_eye=tuple(pts[2:4].mean(axis=0)), nose=tuple(pts[4]),
                   landmarks=face.landmarks if face.landmarks is not None else pts)
    chip = dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    return refined, chip


def embed_chip(chip: np.ndarray) -> np.ndarray:
    """The 128-D embedding of one aligned chip (unit-free; same person within ~0.6 Euclidean)."""
    return np.asarray(_resnet().compute_face_descriptor(chip), dtype=np.float32)


class _Done(Future):
    def __init__(self, value=None, error=None):
        super().__init__()
        if error is not None:
            self.set_exception(error)
        else:
            self.set_result(value)


def _warm_worker():
    _resnet()


class EmbeddingPool:
    """Embeds chips in ``workers`` processes (1 = in this process, synchronously).

    Worker processes are started with 'spawn' so a running camera thread is never forked.
    """

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self._executor = None
        if self.workers > 1:
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_warm_worker)
            # Load the model in every worker now, not at the first face.
            for f in [self._executor.submit(_resnet_ready) for _ in range(self.workers)]:
                f.result(timeout=120)

    def submit(self, chip: np.ndarray) -> Future:
        if self._executor is None:
            try:
                return _Done(embed_chip(chip))
            except Exception as e:  # surfaced through the future like the pooled path
                return _Done(error=e)
        try:
            return self._executor.submit(embed_chip, chip)
        except BrokenProcessPool:  # a worker died (out of memory?): carry on in this process
            self._executor = None
            self.workers = 1
            return self.submit(chip)

    def embed(self, chip: np.ndarray) -> np.ndarray:
        return self.submit(chip).result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _resnet_ready() -> bool:
    _resnet()
    return True
