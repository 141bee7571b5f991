"""The `[liveness] mode` policy and one attempt's session (see terminal/liveness/__init__.py).

Order of checks in a session: the frozen-frame cue on the first frames (all modes but off), then the
passive models (passive, passive+active, auto), then the challenge (active, passive+active, and auto
when the passive score is in doubt or the models are unavailable).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np

from terminal.config import ConfigError
from terminal.liveness import MODES, LivenessResult, challenge, landmarks, replay
from terminal.liveness.passive import ModelFileError, PassiveChecker

log = logging.getLogger("presensi.liveness")

FROZEN_FRAMES = 3          # frames compared for the frozen-frame cue
FROZEN_MAX_DIFFERENCE = 0.2  # mean grey-level change below which consecutive frames count as identical


@dataclass(frozen=True)
class Thresholds:
    passive: float       # fused real score at or above which the passive check passes
    auto_trust: float    # in auto mode, a passive score at or above this needs no challenge
    passive_frames: int  # frames whose passive scores are averaged


def _load_passive(cfg) -> tuple[PassiveChecker | None, str | None]:
    missing = [k for k in ("minifasnet_v2", "minifasnet_v1se") if not getattr(cfg, k)]
    if missing:
        return None, (f"[liveness] {' and '.join(missing)} not set: the passive check has no model; "
                      "run `presensi models fetch` and set the paths it prints")
    try:
        return PassiveChecker(cfg.minifasnet_v2, cfg.minifasnet_v1se), None
    except ModelFileError as e:
        return None, str(e)


def _challenges(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [n for n in names if n not in challenge.PROMPTS]
    if unknown or not names:
        raise ConfigError(f"[liveness] challenges = {text!r}: use a comma-separated list of "
                          f"{', '.join(challenge.PROMPTS)}")
    return names


class LivenessPolicy:
    def __init__(self, cfg, on_refused=None, rng: random.Random | None = None):
        if cfg.mode not in MODES:
            raise ConfigError(f"[liveness] mode = {cfg.mode!r} is not allowed; use one of {', '.join(MODES)}")
        self.mode = cfg.mode
        self.checker, self.problem = (None, None) if cfg.mode in ("off", "active") else _load_passive(cfg)
        if self.problem:
            log.warning("liveness: %s", self.problem)
        self.thresholds = Thresholds(cfg.passive_threshold, cfg.auto_trust, cfg.passive_frames)
        self.settings = challenge.ChallengeSettings(
            seconds=cfg.challenge_seconds, turn_delta=cfg.turn_delta, choices=_challenges(cfg.challenges),
            planar_correlation=cfg.planar_correlation, planar_nose_error=cfg.planar_nose_error,
            identical_texture=cfg.identical_texture)
        self.on_refused = on_refused
        self.rng = rng or random.SystemRandom()

    def begin(self, employee_id) -> Session:
        return Session(self, employee_id)

    def status(self) -> dict:
        return {"ok": self.problem is None or self.mode == "auto", "mode": self.mode,
                "passive_model": self.checker is not None, "problem": self.problem,
                "summary": f"mode {self.mode}" + (f"; {self.problem}" if self.problem else "")}


class Session:
    """One attempt by one employee candidate."""

    def __init__(self, policy: LivenessPolicy, employee_id):
        self.policy = policy
        self.employee = employee_id
        self.checks: dict = {"mode": policy.mode, "ran": []}
        self._patches: list[np.ndarray] = []
        self._passive_scores: list[dict] = []
        self._challenge: challenge.ChallengeRun | None = None
        self.result: LivenessResult | None = None

    @property
    def prompt(self) -> str | None:
        return self._challenge.prompt if self._challenge is not None and self.result is None else None

    def feed(self, frame_bgr: np.ndarray, face, t: float) -> LivenessResult | None:
        if self.result is not None:
            return self.result
        mode = self.policy.mode
        if mode == "off":
            return self._finish(True, "liveness checks are off")
        face = landmarks.ensure(frame_bgr, face)
        frozen = self._frozen_cue(frame_bgr, face)
        if frozen is not None:
            return frozen
        if self._challenge is None and mode != "active":
            outcome = self._passive_step(frame_bgr, face)
            if outcome is not None:
                return outcome
            if self._challenge is None:
                return None
        if self._challenge is None:
            self._start_challenge()
        return self._challenge_step(frame_bgr, face, t)

    # -- checks ------------------------------------------------------------------------------------

    def _frozen_cue(self, frame, face) -> LivenessResult | None:
        if "frozen" in self.checks:
            return None
        self._patches.append(replay.face_patch(frame, face.box))
        if len(self._patches) < FROZEN_FRAMES:
            return None
        diffs = [replay.frame_difference(a, b) for a, b in zip(self._patches, self._patches[1:], strict=False)]
        self.checks["ran"].append("frozen")
        self.checks["frozen"] = {"max_difference": round(max(diffs), 4),
                                 "threshold": FROZEN_MAX_DIFFERENCE}
        self.checks["moire"] = round(replay.moire_score(frame, face.box), 4)
        self._patches = []  # the cue has run; keep nothing of the face
        if max(diffs) < FROZEN_MAX_DIFFERENCE:
            return self._finish(False, "identical frames: a still picture, not a live camera view")
        return None

    def _passive_step(self, frame, face) -> LivenessResult | None:
        policy, mode = self.policy, self.policy.mode
        if policy.checker is None:
            if mode == "auto":
                self._note_passive_unavailable()
                self._start_challenge()
                return None
            return self._finish(False, f"passive check unavailable: {policy.problem}")
        if len(self._passive_scores) < policy.thresholds.passive_frames:
            self._passive_scores.append(policy.checker.scores(frame, face.box))
        if len(self._passive_scores) < policy.thresholds.passive_frames or "frozen" not in self.checks:
            return None  # decide only once the frozen-frame cue has run too
        score = self._record_passive()
        if score < policy.thresholds.passive:
            return self._finish(False, f"passive check: real-face score {score:.3f} below "
                                       f"{policy.thresholds.passive:g}")
        if mode == "passive":
            return self._finish(True, "passive check passed")
        if mode == "auto" and policy.thresholds.auto_trust < 1.0 and score >= policy.thresholds.auto_trust:
            return self._finish(True, "passive check confident")
        self._start_challenge()  # passive+active, or auto with a score in doubt
        return None

    def _record_passive(self) -> float:
        keys = self._passive_scores[0].keys()
        raw = {k: float(np.mean([s[k] for s in self._passive_scores])) for k in keys}
        mean = {k: round(v, 4) for k, v in raw.items()}
        mean.update(frames=len(self._passive_scores), threshold=self.policy.thresholds.passive)
        if self.policy.mode == "auto":
            mean["auto_trust"] = self.policy.thresholds.auto_trust
        self.checks["ran"].append("passive")
        self.checks["passive"] = mean
        return raw["real"]

    def _note_passive_unavailable(self) -> None:
        self.checks["passive"] = {"unavailable": self.policy.problem}

    def _start_challenge(self) -> None:
        if self._challenge is None:
            self._challenge = challenge.ChallengeRun(self.policy.settings, self.policy.rng)
            self.checks["ran"].append("challenge")

    def _challenge_step(self, frame, face, t) -> LivenessResult | None:
        outcome = self._challenge.feed(frame, face, t)
        if outcome is None:
            return None
        passed, reason, details = outcome
        self.checks["challenge"] = details
        return self._finish(passed, reason)

    def _finish(self, passed: bool, reason: str) -> LivenessResult:
        self.result = LivenessResult(passed=passed, reason=reason, checks=self.checks)
        self._patches = []
        if self._challenge is not None:
            self._challenge.baseline.clear()  # keep no frame of the face once decided
        if not passed:
            entry = {"employee_candidate": self.employee, "reason": reason, "checks": self.checks}
            log.warning("liveness refused: employee candidate %s: %s; checks %s",
                        self.employee, reason, self.checks)
            if self.policy.on_refused is not None:
                self.policy.on_refused(entry)
        return self.result
