"""Enrolment: from a folder of photos (``presensi enroll-photos``) and from live camera frames.

A photo or frame gives a template only if it holds exactly one face that passes the quality gate.
Results per photo: "accepted", "no_face", "several_faces", "too_small", "blurred", "not_frontal",
"too_dark", "too_bright", "unreadable".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terminal.face import embed as embed_mod
from terminal.face import stills
from terminal.face.quality import QualityLimits, assess
from terminal.face.store import MAX_TEMPLATES_PER_EMPLOYEE, TemplateStore

EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MESSAGES = {
    "accepted": "accepted",
    "no_face": "no face found",
    "several_faces": "several faces in the photo; use a photo of this employee alone",
    "too_small": "face too small; use a closer or larger photo",
    "blurred": "face blurred; use a sharper photo",
    "not_frontal": "face not frontal; use a photo looking at the camera",
    "too_dark": "face too dark",
    "too_bright": "face over-exposed",
}


class EnrolError(Exception):
    """The enrolment folder cannot be used; the message says what to do."""


@dataclass
class PhotoResult:
    employee: str
    path: str
    result: str
    message: str
    quality: dict = field(default_factory=dict)
    embedding: np.ndarray | None = field(default=None, repr=False)

    def as_json(self) -> dict:
        return {"employee": self.employee, "photo": self.path, "result": self.result,
                "message": self.message, "quality": self.quality}


def assess_photo(path: Path, employee: str, detector, limits: QualityLimits) -> PhotoResult:
    try:
        image = stills.read_image(path)
    except stills.ImageError as e:
        return PhotoResult(employee, str(path), "unreadable", str(e))
    found = stills.analyse(image, detector, limits, embed=False)
    if not found:
        return PhotoResult(employee, str(path), "no_face", MESSAGES["no_face"])
    if len(found) > 1:
        return PhotoResult(employee, str(path), "several_faces", MESSAGES["several_faces"])
    face = found[0]
    if not face.quality.ok:
        reason = face.quality.reasons[0]
        return PhotoResult(employee, str(path), reason, MESSAGES[reason], face.quality.metrics)
    return PhotoResult(employee, str(path), "accepted", MESSAGES["accepted"], face.quality.metrics,
                       embed_mod.embed_chip(face.chip))


def scan_folder(root: Path) -> dict[str, list[Path]]:
    root = Path(root)
    if not root.is_dir():
        raise EnrolError(f"{root}: not a folder; expected DIR/<employee-id>/*.jpg|png")
    out = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if not EMPLOYEE_ID.match(sub.name):
            raise EnrolError(f"{sub}: '{sub.name}' is not a valid employee id (letters, digits, . _ -)")
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in stills.IMAGE_SUFFIXES)
        out[sub.name] = photos
    if not out:
        raise EnrolError(f"{root}: no employee folders; expected DIR/<employee-id>/*.jpg|png")
    return out


def enrol_photos(root: Path, store: TemplateStore, detector, limits: QualityLimits,
                  replace: bool = True) -> list[PhotoResult]:
    """Assess every photo, then store the accepted templates per employee (replacing earlier ones)."""
    results = []
    for employee, photos in scan_folder(root).items():
        per = [assess_photo(p, employee, detector, limits) for p in photos]
        results.extend(per)
        accepted = [r.embedding for r in per if r.result == "accepted"]
        if accepted:
            store.add(employee, accepted[:MAX_TEMPLATES_PER_EMPLOYEE], replace=replace)
    return results


class LiveEnrolment:
    """Collects templates for one employee from live frames: one face, quality gate passed, each new
    template different enough from the ones kept (varied pose/light), all consistent with each other."""

    def __init__(self, employee: str, detector, limits: QualityLimits, needed: int = 5,
                 min_spread: float = 0.05, max_spread: float = 0.55):
        self.employee, self.detector, self.limits = employee, detector, limits
        self.needed, self.min_spread, self.max_spread = needed, min_spread, max_spread
        self.templates: list[np.ndarray] = []
        self.last_issue: str | None = None

    @property
    def done(self) -> bool:
        return len(self.templates) >= self.needed

    def feed(self, frame: np.ndarray) -> str:
        """Look at one frame; returns 'accepted', 'similar', 'inconsistent' or a quality reason."""
        faces = self.detector.detect(frame)
        if len(faces) != 1:
            return self._issue("no_face" if not faces else "several_faces")
        rgb = embed_mod.to_rgb(frame)
        refined, chip = embed_mod.align(rgb, faces[0])
        quality = assess(refined, chip, self.limits)
        if not quality.ok:
            return self._issue(quality.reasons[0])
        emb = embed_mod.embed_chip(chip)
        if self.templates:
            d = np.linalg.norm(np.array(self.templates) - emb, axis=1)
            if d.min() < self.min_spread:
                return self._issue("similar")
            if d.max() > self.max_spread:  # probably someone else stepped in
                return self._issue("inconsistent")
        self.templates.append(emb)
        self.last_issue = None
        return "accepted"

    def _issue(self, issue: str) -> str:
        self.last_issue = issue
        return issue

    def save(self, store: TemplateStore, replace: bool = True) -> int:
        if not self.templates:
            raise EnrolError(f"no usable frames collected for {self.employee}")
        return store.add(self.employee, self.templates, replace=replace)
