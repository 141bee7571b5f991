"""The gallery: several templates per employee, vectorised 1:N search and the decision rule.

Rule (calibrated on LFW, see docs/face-recognition.md): an employee's score is the mean distance of their
``top_k`` nearest templates; the best employee is accepted only if that score is at most ``threshold``
AND the next employee's score is at least ``margin`` further away. Across frames, scores are averaged and
``frames_required`` frames must individually rank the same employee first (see consensus.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terminal.face.embed import EMBEDDING_DIM


@dataclass(frozen=True)
class Rule:
    threshold: float = 0.51
    margin: float = 0.09
    top_k: int = 1

    @classmethod
    def from_config(cls, face_cfg) -> Rule:
        return cls(threshold=face_cfg.threshold, margin=face_cfg.margin, top_k=face_cfg.top_k)


@dataclass(frozen=True)
class Match:
    employee: str | None  # the accepted employee, or None
    candidate: str | None  # the nearest employee whether accepted or not
    distance: float  # candidate's score
    margin: float  # runner-up's score minus candidate's (inf with one employee)
    accepted: bool
    reason: str  # "matched", "too_far", "ambiguous", "empty_gallery"

    def as_dict(self) -> dict:
        return {"employee": self.employee, "distance": _round(self.distance), "margin": _round(self.margin)}


def _round(v: float):
    return None if not np.isfinite(v) else round(float(v), 4)


class Gallery:
    """Immutable set of templates; build a new one to change it (atomic swap for the pipeline)."""

    def __init__(self, templates: dict[str, list] | None = None):
        templates = {e: np.asarray(t, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
                     for e, t in (templates or {}).items() if len(t)}
        self.employees: list[str] = sorted(templates)
        self.templates = templates
        mats = [templates[e] for e in self.employees]
        self._matrix = np.concatenate(mats) if mats else np.zeros((0, EMBEDDING_DIM), np.float32)
        self._sq = (self._matrix.astype(np.float64) ** 2).sum(axis=1)
        counts = np.array([len(m) for m in mats], dtype=np.int64)
        kmax = int(counts.max()) if len(counts) else 0
        # index[e, j] = row of employee e's j-th template, -1 = padding.
        self._index = np.full((len(mats), kmax), -1, dtype=np.int64)
        start = 0
        for e, n in enumerate(counts):
            self._index[e, :n] = np.arange(start, start + n)
            start += n
        self._counts = counts

    def __len__(self) -> int:
        return len(self.employees)

    @property
    def template_count(self) -> int:
        return len(self._matrix)

    def distances(self, probes: np.ndarray) -> np.ndarray:
        """Euclidean distances (N probes x M templates)."""
        p = np.asarray(probes, dtype=np.float64).reshape(-1, EMBEDDING_DIM)
        d2 = (p ** 2).sum(axis=1)[:, None] + self._sq[None, :] - 2.0 * p @ self._matrix.T.astype(np.float64)
        return np.sqrt(np.maximum(d2, 0.0))

    def scores(self, probes: np.ndarray, top_k: int) -> np.ndarray:
        """Per-employee score (N x E): mean of the employee's ``top_k`` nearest template distances."""
        d = self.distances(probes)
        n = d.shape[0]
        if not self.employees:
            return np.zeros((n, 0))
        padded = np.where(self._index >= 0, d[:, np.maximum(self._index, 0)], np.inf)  # N x E x Kmax
        padded.sort(axis=2)
        k = max(1, min(top_k, padded.shape[2]))
        k_eff = np.minimum(self._counts, k)  # employees with fewer templates use all of them
        head = padded[:, :, :k]
        head = np.where(np.arange(k)[None, None, :] < k_eff[None, :, None], head, 0.0)
        return head.sum(axis=2) / k_eff[None, :]

    def decide(self, scores: np.ndarray, rule: Rule) -> list[Match]:
        """Apply the rule to score rows (N x E), e.g. one row per probe or the mean over frames."""
        return [decide_row(row, self.employees, rule) for row in np.atleast_2d(scores)]

    def identify(self, probes: np.ndarray, rule: Rule) -> list[Match]:
        return self.decide(self.scores(probes, rule.top_k), rule)


def decide_row(row: np.ndarray, employees: list[str], rule: Rule) -> Match:
    if len(employees) == 0:
        return Match(None, None, float("inf"), float("inf"), False, "empty_gallery")
    order = np.argsort(row)
    best = int(order[0])
    dist = float(row[best])
    margin = float(row[order[1]] - dist) if len(order) > 1 else float("inf")
    if dist > rule.threshold:
        return Match(None, employees[best], dist, margin, False, "too_far")
    if margin < rule.margin:
        return Match(None, employees[best], dist, margin, False, "ambiguous")
    return Match(employees[best], employees[best], dist, margin, True, "matched")
