"""Active check: a random on-screen challenge verified from landmark geometry across frames.

A session first takes a short, roughly frontal baseline, then shows the prompt and watches the face:
- turn left/right: the yaw cue (nose offset along the eye axis, see geometry.py) must move by at least
  `turn_delta` in the asked direction and stay there for `hold_frames` frames, and the baseline face must
  NOT be explained by one homography of the current face (a flat picture tilted or bent on two axes can
  shear the nose sideways; its texture still follows a single homography, a turning head's does not);
- closer: the face must grow by `approach_ratio` while still facing the camera, and the face plus its
  surroundings must not move as one plane (a photo with its own background scales as a whole).
Turning the other way first, the face jumping (a swap of photo for person), or running out of time
refuses the attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from terminal.liveness import geometry, replay

# Text an employee reads on the terminal screen (Bahasa Indonesia).
PROMPTS = {
    "left": "Tengok ke kiri",
    "right": "Tengok ke kanan",
    "closer": "Dekatkan wajah ke kamera",
}
BASELINE_PROMPT = "Lihat lurus ke kamera"


@dataclass(frozen=True)
class ChallengeSettings:
    seconds: float = 4.0          # time to follow the prompt
    baseline_frames: int = 2      # frontal frames before the prompt
    frontal_yaw: float = 0.25     # |yaw| allowed for the baseline
    turn_delta: float = 0.15      # yaw change that counts as a turn
    approach_ratio: float = 1.25  # face size growth that counts as "closer"
    hold_frames: int = 2          # consecutive frames the pose must be held
    max_roll_change: float = 15.0  # degrees; a head turning on request does not roll this much
    max_jump: float = 0.6         # centre movement between frames, in face sizes, treated as a face swap
    planar_correlation: float = 0.90   # ECC fit at or above which the face moved as a flat picture ...
    planar_nose_error: float = 0.12    # ... if the homography also predicts the nose this well
    identical_texture: float = 0.97    # ECC fit at or above which the texture is the same picture, nose or not
    min_foreshortening: float = 0.6    # eye distance / nose height vs baseline; a head turned < 50 deg stays above
    max_foreshortening: float = 1.5    # ... and a turning head does not get squashed vertically
    approach_planar_correlation: float = 0.85
    choices: tuple[str, ...] = ("left", "right")


def _turn_progress(kind: str, yaw_change: float) -> float:
    return yaw_change if kind == "left" else -yaw_change


@dataclass
class ChallengeRun:
    """State of one challenge in one attempt. ``feed`` returns (passed, reason, details) or None."""

    settings: ChallengeSettings
    rng: random.Random
    kind: str = ""
    baseline: list = field(default_factory=list)   # (frame, face, pose)
    started_at: float | None = None
    first_t: float | None = None
    held: int = 0
    last_center: tuple[float, float] | None = None
    last_size: float = 0.0
    peak: float = 0.0
    last_planarity: replay.Planarity | None = None

    def __post_init__(self):
        self.kind = self.rng.choice(self.settings.choices)

    @property
    def prompt(self) -> str:
        return PROMPTS[self.kind] if self.started_at is not None else BASELINE_PROMPT

    def feed(self, frame: np.ndarray, face, t: float):
        try:
            pose = geometry.measure(face)
        except ValueError:
            return None
        if self._jumped(pose):
            return False, "face changed during the challenge", self._details(pose)
        if self.started_at is None:
            return self._take_baseline(frame, face, pose, t)
        if t - self.started_at > self.settings.seconds:
            return False, self._timeout_reason(), self._details(pose, self.last_planarity)
        if self.kind == "closer":
            return self._check_closer(frame, face, pose)
        return self._check_turn(frame, face, pose)

    def _timeout_reason(self) -> str:
        if self.last_planarity is not None and self.last_planarity.correlation is None:
            # Fail closed: a turn whose frames cannot be aligned with the baseline is not accepted.
            return f"challenge '{self.kind}' seen but not verifiable (frames could not be aligned)"
        return f"challenge '{self.kind}' not followed in {self.settings.seconds:g} s"

    def _jumped(self, pose) -> bool:
        previous, self.last_center = self.last_center, pose.center
        size, self.last_size = self.last_size, pose.size
        if previous is None:
            return False
        moved = float(np.hypot(pose.center[0] - previous[0], pose.center[1] - previous[1]))
        return moved > self.settings.max_jump * max(size, pose.size)

    def _take_baseline(self, frame, face, pose, t):
        self.first_t = t if self.first_t is None else self.first_t
        if t - self.first_t > self.settings.seconds:
            return False, "no steady frontal face to start the challenge", self._details(pose)
        if abs(pose.yaw) > self.settings.frontal_yaw:
            self.baseline.clear()  # ask for a frontal face first
            return None
        self.baseline.append((frame.copy(), face, pose))
        if len(self.baseline) >= self.settings.baseline_frames:
            self.started_at = t
        return None

    @property
    def _base_pose(self):
        poses = [p for _, _, p in self.baseline]
        return float(np.median([p.yaw for p in poses])), float(np.median([p.size for p in poses]))

    def _check_turn(self, frame, face, pose):
        base_yaw, _ = self._base_pose
        fore = self._foreshortening(pose)
        if self._rolled(pose) or not self.settings.min_foreshortening <= fore <= self.settings.max_foreshortening:
            self.held = 0  # not a head turning on request (rolled, or squashed like a tilted picture): wait
            return None
        progress = _turn_progress(self.kind, pose.yaw - base_yaw)
        self.peak = max(self.peak, progress)
        if progress <= -self.settings.turn_delta:
            return False, "turned the wrong way", self._details(pose)
        if progress < self.settings.turn_delta:
            self.held = 0
            return None
        # Every frame that shows the turn must also fail to look like the baseline picture moved.
        base_frame, base_face, _ = self.baseline[-1]
        plan = replay.planarity(base_frame, base_face, frame, face)
        self.last_planarity = plan
        if plan.correlation is None:
            self.held = 0  # alignment failed: no verdict from this frame, look at the next one
            return None
        if (plan.is_planar(self.settings.planar_correlation, self.settings.planar_nose_error)
                or plan.correlation >= self.settings.identical_texture):
            return False, "the face moved like a flat picture", self._details(pose, plan)
        self.held += 1
        if self.held < self.settings.hold_frames:
            return None
        return True, f"challenge '{self.kind}' followed", self._details(pose, plan)

    def _foreshortening(self, pose) -> float:
        """How much the eye distance shrank relative to the eye-to-nose height since the baseline. A head
        turned by yaw keeps the height and shrinks the eye distance by cos(yaw); a picture turned far
        about its vertical axis shrinks it much more."""
        base = [p for _, _, p in self.baseline]
        base_ratio = float(np.median([1.0 / max(p.pitch, 1e-3) for p in base]))
        return (1.0 / max(pose.pitch, 1e-3)) / max(base_ratio, 1e-3)

    def _rolled(self, pose) -> bool:
        base_roll = float(np.median([p.roll_deg for _, _, p in self.baseline]))
        change = (pose.roll_deg - base_roll + 180.0) % 360.0 - 180.0
        return abs(change) > self.settings.max_roll_change

    def _check_closer(self, frame, face, pose):
        base_yaw, base_size = self._base_pose
        growth = pose.size / max(base_size, 1.0)
        self.peak = max(self.peak, growth)
        facing = abs(pose.yaw - base_yaw) < self.settings.turn_delta and not self._rolled(pose)
        self.held = self.held + 1 if growth >= self.settings.approach_ratio and facing else 0
        if self.held < self.settings.hold_frames:
            return None
        base_frame, base_face, _ = self.baseline[-1]
        wide_a = _widened(base_face, 2.0)
        wide_b = _widened(face, 2.0)
        plan = replay.planarity(base_frame, wide_a, frame, wide_b)
        self.last_planarity = plan
        if plan.correlation is None:
            self.held = 0  # alignment failed: no verdict from this frame (fail closed), look at the next one
            return None
        details = self._details(pose, plan)
        if plan.correlation >= self.settings.approach_planar_correlation:
            return False, "the face and its surroundings moved like a flat picture", details
        return True, "challenge 'closer' followed", details

    def _details(self, pose, plan: replay.Planarity | None = None) -> dict:
        out = {"challenge": self.kind, "baseline_frames": len(self.baseline)}
        if self.baseline:
            base_yaw, base_size = self._base_pose
            out.update(baseline_yaw=round(base_yaw, 4), yaw=round(pose.yaw, 4),
                       foreshortening=round(self._foreshortening(pose), 4),
                       size_ratio=round(pose.size / max(base_size, 1.0), 4), peak=round(self.peak, 4))
        if plan is not None:
            out["planarity"] = plan.as_dict()
        return out


@dataclass
class _Widened:
    box: tuple
    left_eye: tuple
    right_eye: tuple
    nose: tuple


def _widened(face, factor: float) -> _Widened:
    x, y, w, h = face.box
    cx, cy = x + w / 2, y + h / 2
    return _Widened((cx - w * factor / 2, cy - h * factor / 2, w * factor, h * factor),
                    face.left_eye, face.right_eye, face.nose)
