"""Agreement across frames: per-employee scores averaged over the frames seen, the gallery rule applied
to the average, and at least ``frames_required`` frames individually ranking the winner first."""

from __future__ import annotations

import numpy as np

from terminal.face.gallery import Match, Rule, decide_row


def fuse(scores: np.ndarray, employees: list[str], rule: Rule, frames_required: int) -> Match:
    """Decision over a stack of score rows (frames x employees)."""
    scores = np.atleast_2d(scores)
    match = decide_row(scores.mean(axis=0), employees, rule)
    if not match.accepted:
        return match
    votes = int((scores.argmin(axis=1) == employees.index(match.employee)).sum())
    if votes < frames_required:
        return Match(None, match.candidate, match.distance, match.margin, False, "disagree")
    return match
