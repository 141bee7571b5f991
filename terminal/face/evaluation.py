"""Open-set 1:N evaluation on a folder of identities (LFW dev set): split, embed, score.

Used by bench/face_eval.py (the full operating-point table) and tests/test_face_eval.py (a subset).
Split: identities are assigned to 3 folds; in each fold one third are never-enrolled strangers and the
rest are enrolled with 1-3 photos (at least one photo left to probe with); results are pooled over folds
so every identity serves as a stranger once.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from terminal.face import stills
from terminal.face.gallery import Gallery, Rule

PIPELINE_VERSION = "v1-hog-auto-upsample-5pt-chip150"


@dataclass
class Sample:
    path: str
    identity: str
    embedding: np.ndarray | None  # None = no face found
    views: np.ndarray | None = None  # extra embeddings of augmented views (multi-frame probes)


def read_manifest(root: Path) -> list[tuple[str, str]]:
    with open(root / "MANIFEST.csv", newline="") as f:
        return [(r["path"], r["identity"]) for r in csv.DictReader(f)]


def augment(image: np.ndarray) -> list[np.ndarray]:
    """Views standing in for further video frames: mirrored, slightly zoomed, slightly darker."""
    h, w = image.shape[:2]
    zoom = cv2.resize(image[h // 20: h - h // 20, w // 20: w - w // 20], (w, h))
    darker = cv2.convertScaleAbs(image, alpha=0.8, beta=-10)
    return [cv2.flip(image, 1), zoom, darker]


def embed_samples(root: Path, detector, rows, with_views: bool, cache: Path | None) -> list[Sample]:
    key = hashlib.sha256(repr((PIPELINE_VERSION, with_views, rows)).encode()).hexdigest()[:16]
    if cache is not None:
        cache_file = cache / f"lfw-embeddings-{key}.npz"
        if cache_file.exists():
            return _load(cache_file, rows)
    samples = []
    for rel, identity in rows:
        image = stills.read_image(root / rel)
        emb, views = _embed_central(image, detector), None
        if with_views and emb is not None:
            found = [e for e in (_embed_central(v, detector) for v in augment(image)) if e is not None]
            views = np.array(found, dtype=np.float32).reshape(-1, 128)
        samples.append(Sample(rel, identity, emb, views))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        _save(cache_file, samples)
    return samples


def _embed_central(image, detector):
    found = stills.central_face(stills.analyse(image, detector), image.shape)
    return None if found is None else found.embedding


def _save(path: Path, samples: list[Sample]) -> None:
    emb = np.array([s.embedding if s.embedding is not None else np.full(128, np.nan) for s in samples], np.float32)
    views = [s.views if s.views is not None else np.zeros((0, 128), np.float32) for s in samples]
    counts = np.array([len(v) for v in views])
    flat = np.concatenate(views) if views else np.zeros((0, 128), np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, emb=emb, counts=counts, views=flat)
    tmp.replace(path)


def _load(path: Path, rows) -> list[Sample]:
    data = np.load(path)
    emb, counts, flat = data["emb"], data["counts"], data["views"]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for i, (rel, identity) in enumerate(rows):
        e = None if np.isnan(emb[i]).any() else emb[i]
        v = flat[offsets[i]: offsets[i + 1]] if counts[i] else None
        out.append(Sample(rel, identity, e, v))
    return out


@dataclass
class Split:
    gallery: dict[str, list[np.ndarray]]
    genuine: list[Sample]  # probes of enrolled identities
    strangers: list[Sample]  # probes of identities never enrolled


def make_split(samples: list[Sample], fold: int, folds: int = 3) -> Split:
    by_id: dict[str, list[Sample]] = {}
    for s in samples:
        by_id.setdefault(s.identity, []).append(s)
    gallery, genuine, strangers = {}, [], []
    for i, identity in enumerate(sorted(by_id)):
        items = by_id[identity]
        if i % folds == fold:
            strangers.extend(items)
            continue
        n_enrol = min(1 + (i // folds) % 3, len(items) - 1)  # 1, 2 or 3 photos, at least one probe left
        enrol = [s.embedding for s in items[:n_enrol] if s.embedding is not None]
        if not enrol:  # no usable enrolment photo: the person is effectively a stranger
            strangers.extend(items)
            continue
        gallery[identity] = enrol
        genuine.extend(items[n_enrol:])
    return Split(gallery, genuine, strangers)


def _probe_rows(gal: Gallery, probes: list[Sample], rule: Rule, multi: bool) -> list:
    """One decision per probe (None when no face was found)."""
    out = []
    for s in probes:
        if s.embedding is None:
            out.append(None)
            continue
        frames = [s.embedding] + (list(s.views) if multi and s.views is not None else [])
        out.append(fuse_frames(gal.scores(np.array(frames), rule.top_k), gal, rule, frames_required=len(frames)
                               if not multi else min(len(frames), MULTI_FRAMES_REQUIRED)))
    return out


MULTI_FRAMES_REQUIRED = 3


def fuse_frames(scores: np.ndarray, gal: Gallery, rule: Rule, frames_required: int):
    """The consensus rule on a stack of per-frame score rows (same as the live pipeline)."""
    from terminal.face.consensus import fuse
    return fuse(scores, gal.employees, rule, frames_required)


def evaluate(samples: list[Sample], rule: Rule, multi: bool = False, folds: int = 3) -> dict:
    counts = dict(genuine=0, rank1=0, accepted=0, wrong=0, strangers=0, strangers_accepted=0, no_face=0)
    for fold in range(folds):
        split = make_split(samples, fold, folds)
        gal = Gallery(split.gallery)
        for s, m in zip(split.genuine, _probe_rows(gal, split.genuine, rule, multi), strict=True):
            counts["genuine"] += 1
            if m is None:
                counts["no_face"] += 1
                continue
            counts["rank1"] += m.candidate == s.identity
            counts["accepted"] += m.accepted and m.employee == s.identity
            counts["wrong"] += m.accepted and m.employee != s.identity
        for m in _probe_rows(gal, split.strangers, rule, multi):
            counts["strangers"] += 1
            counts["strangers_accepted"] += bool(m is not None and m.accepted)
    return summarise(counts)


def summarise(c: dict) -> dict:
    def pct(a, b):
        return round(100.0 * a / b, 2) if b else None

    return {
        "genuine_probes": c["genuine"], "stranger_probes": c["strangers"], "no_face": c["no_face"],
        "rank1_pct": pct(c["rank1"], c["genuine"]),
        "genuine_accepted_pct": pct(c["accepted"], c["genuine"]),
        "wrong_identity_pct": pct(c["wrong"], c["genuine"]),
        "strangers_accepted_pct": pct(c["strangers_accepted"], c["strangers"]),
        "wrong_identity": c["wrong"], "strangers_accepted": c["strangers_accepted"],
    }
