"""The live face pipeline: motion gate -> detect -> track -> quality gate -> embed (worker processes) ->
gallery scores -> agreement across frames -> liveness -> one Decision per person in view.

``FacePipeline.process(frame, t)`` is called with every camera frame and returns the decisions reached
on it. A face that was decided is tracked and not embedded again while it stays in view. With nobody in
view and nothing moving, detection is skipped (the empty scene costs almost nothing).

During the liveness challenge the identity does not rest on the tracker alone: the tracker follows a box,
and a photo of the victim held up to be identified can be swapped in place for the attacker's own head,
which then turns as asked. So frames of the challenge are re-identified at a reduced rate (every
`reid_every` seconds, plus the frame that passed the challenge, always), and each must still be the
identified employee: nobody else nearer, and within `threshold + reid_slack` (a turned head embeds a
little farther from its frontal templates). A frame of someone else refuses the attempt; a passed
challenge is accepted only once its own frame was confirmed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from terminal.face import embed as embed_mod
from terminal.face.consensus import fuse
from terminal.face.gallery import Gallery, Match, Rule
from terminal.face.quality import QualityLimits, assess
from terminal.face.types import Face
from terminal.liveness.off import OffLiveness


@dataclass(frozen=True)
class PipelineSettings:
    frames_required: int = 3
    max_frames: int = 6
    decision_timeout: float = 6.0
    motion_threshold: float = 2.0
    idle_detect_every: float = 1.0  # even without motion, look for a face this often (someone standing still)
    track_lost_after: float = 1.0  # a track not seen for this long has left
    retry_after: float = 2.0  # a refused face still in view gets a new attempt after this long
    reid_every: float = 0.5  # seconds between re-identifications of a face during the liveness challenge
    reid_slack: float = 0.08  # added to the match threshold for those frames (turned heads embed farther)

    @classmethod
    def from_config(cls, face_cfg) -> PipelineSettings:
        return cls(frames_required=face_cfg.frames_required, max_frames=max(face_cfg.max_frames,
                   face_cfg.frames_required), decision_timeout=face_cfg.decision_timeout,
                   motion_threshold=face_cfg.motion_threshold)


@dataclass
class Decision:
    employee: str | None
    accepted: bool
    reason: str
    liveness: dict
    frames: int
    ms: float
    match: Match | None = None
    best_frame: np.ndarray | None = field(default=None, repr=False)

    def as_json(self) -> dict:
        """The `presensi scan` line (exactly the fields of the CLI contract)."""
        return {"employee": self.employee, "accepted": self.accepted, "reason": self.reason,
                "liveness": self.liveness, "frames": self.frames, "ms": round(self.ms, 1)}

    def scores(self) -> dict:
        """The evidence behind the decision (punch details), never the templates."""
        m = self.match
        return {} if m is None else {"candidate": m.candidate, **{k: v for k, v in m.as_dict().items()
                                                                  if k != "employee"}}

    def punch_details(self, face_cfg) -> dict:
        """What a face punch records of this decision (the daemon and `presensi scan --record` alike)."""
        line = self.as_json()
        return {**self.scores(), "frames": line["frames"], "ms": line["ms"], "liveness": line["liveness"],
                "threshold": face_cfg.threshold, "margin_required": face_cfg.margin, "top_k": face_cfg.top_k}

    def best_frame_jpeg(self, quality: int = 85) -> bytes | None:
        if self.best_frame is None:
            return None
        ok, buf = cv2.imencode(".jpg", self.best_frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return buf.tobytes() if ok else None


@dataclass
class _Track:
    id: int
    box: tuple
    first_seen: float
    last_seen: float
    rows: list = field(default_factory=list)  # per-frame score rows (employees,)
    pending: list = field(default_factory=list)  # (future, frame, face)
    decided: bool = False
    identity: Match | None = None
    session: object = None
    session_started: float = 0.0
    best: tuple = (np.inf, None)  # (distance, frame)
    face: Face | None = None
    rejected_quality: int = 0
    seen_clock: float = 0.0  # self.clock() when first detected (ms is measured from here)
    retry_at: float | None = None  # refused: start a new attempt at this time if still in view
    challenge_frames: int = 0  # frames fed to the liveness session after the identifying one
    reid: list = field(default_factory=list)  # (future, t) re-identifications in flight
    reid_at: float = -1e18  # when the last re-identification was submitted
    reid_done: int = 0  # re-identifications that confirmed the employee
    passed: dict | None = None  # liveness passed: its checks, waiting for the passing frame's confirmation


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / float(aw * ah + bw * bh - inter or 1)


def same_face(a, b) -> float:
    """> 0 when box b is plausibly the same face as box a one frame later: overlapping, or moved less than
    half a face width (a quick head movement must not start a second decision for the same person)."""
    overlap = iou(a, b)
    if overlap >= 0.3:
        return overlap
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    shift = ((ax + aw / 2 - bx - bw / 2) ** 2 + (ay + ah / 2 - by - bh / 2) ** 2) ** 0.5
    similar_size = 0.6 <= (bw * bh) / float(aw * ah or 1) <= 1.7
    return 0.01 if similar_size and shift < 0.5 * max(aw, bw) else 0.0


class FacePipeline:
    def __init__(self, detector, gallery: Gallery, rule: Rule, limits: QualityLimits,
                 settings: PipelineSettings = PipelineSettings(), pool: embed_mod.EmbeddingPool | None = None,
                 liveness=None, clock=time.monotonic):
        self.detector, self.gallery, self.rule, self.limits = detector, gallery, rule, limits
        self.settings = settings
        self.pool = pool or embed_mod.EmbeddingPool(1)
        self.liveness = liveness or OffLiveness()
        self.clock = clock
        self.tracks: list[_Track] = []
        self._next_id = 1
        self._prev_thumb = None
        self._last_detect = -1e9
        self.stats = {"frames": 0, "detected_frames": 0, "embedded": 0, "quality_rejected": 0, "embed_errors": 0}

    def set_gallery(self, gallery: Gallery) -> None:
        """Swap in a new gallery (e.g. after a roster update); undecided tracks start over."""
        self.gallery = gallery
        for tr in self.tracks:
            if not tr.decided:
                tr.rows.clear()

    @property
    def prompt(self) -> str | None:
        """Text for the screen from a running liveness challenge, if any."""
        for tr in self.tracks:
            if tr.session is not None and not tr.decided and getattr(tr.session, "prompt", None):
                return tr.session.prompt
        return None

    def process(self, frame: np.ndarray, t: float | None = None, wait: bool = False) -> list[Decision]:
        """Feed one frame; returns decisions reached. ``wait`` = finish this frame's embeddings first."""
        t = self.clock() if t is None else t
        self.stats["frames"] += 1
        if self._pool_saturated():
            # Every worker is busy embedding this person's earlier frames: detecting again would only
            # take CPU from them and delay the decision. Just pick up finished embeddings.
            return self._collect(frame, t, wait) + self._expire(t)
        if not self._should_detect(frame, t):
            return []
        self.stats["detected_frames"] += 1
        self._last_detect = t
        faces = self.detector.detect(frame)
        self._associate(faces, t)
        decisions = self._collect(frame, t, wait=False)  # free the workers before submitting more
        rgb = None
        for tr in self.tracks:
            if tr.retry_at is not None and t >= tr.retry_at:
                self._restart(tr, t)
            if tr.last_seen != t or tr.decided:
                continue
            rgb = embed_mod.to_rgb(frame) if rgb is None else rgb
            if tr.session is not None:
                # liveness needs the landmark model's points; the chip is what re-identification embeds
                tr.face, chip = embed_mod.align(rgb, tr.face)
                if tr.passed is None:
                    tr.challenge_frames += 1
                    decisions += self._feed_liveness(tr, frame, t, chip=chip)
                continue
            self._maybe_embed(tr, frame, rgb)
        decisions += self._collect(frame, t, wait)
        decisions += self._expire(t)
        return decisions

    def _pool_saturated(self) -> bool:
        pending = [f for tr in self.tracks for f, _, _ in tr.pending]
        return len(pending) >= self.pool.workers and not any(f.done() for f in pending)

    # -- motion gate and tracking
    def _should_detect(self, frame: np.ndarray, t: float) -> bool:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        thumb = cv2.resize(gray, (80, 60), interpolation=cv2.INTER_AREA).astype(np.int16)
        prev, self._prev_thumb = self._prev_thumb, thumb
        if self.tracks or prev is None:
            return True
        moving = float(np.abs(thumb - prev).mean()) >= self.settings.motion_threshold
        return moving or t - self._last_detect >= self.settings.idle_detect_every

    def _associate(self, faces: list[Face], t: float) -> None:
        free = list(self.tracks)
        for face in sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True):
            best = max(free, key=lambda tr: same_face(tr.box, face.box), default=None)
            if best is not None and same_face(best.box, face.box) > 0:
                free.remove(best)
                best.box, best.last_seen, best.face = face.box, t, face
            else:
                self.tracks.append(_Track(self._next_id, face.box, t, t, face=face, seen_clock=self.clock()))
                self._next_id += 1

    # -- embedding and agreement
    def _maybe_embed(self, tr: _Track, frame: np.ndarray, rgb: np.ndarray) -> None:
        in_flight = sum(len(x.pending) for x in self.tracks)
        if in_flight >= self.pool.workers or len(tr.rows) + len(tr.pending) >= self.settings.max_frames:
            return
        refined, chip = embed_mod.align(rgb, tr.face)
        tr.face = refined
        if not assess(refined, chip, self.limits).ok:
            tr.rejected_quality += 1
            self.stats["quality_rejected"] += 1
            return
        tr.pending.append((self.pool.submit(chip), frame, refined))

    def _collect(self, frame: np.ndarray, t: float, wait: bool) -> list[Decision]:
        decisions = []
        for tr in self.tracks:
            decisions += self._collect_reid(tr, wait)
            while tr.pending and (wait or tr.pending[0][0].done()):
                future, fr, face = tr.pending.pop(0)
                try:
                    emb = future.result()
                except Exception:  # a lost worker costs this frame only; the next frames are embedded
                    self.stats["embed_errors"] += 1
                    continue
                self.stats["embedded"] += 1
                if tr.decided:
                    continue
                row = self.gallery.scores(emb[None, :], self.rule.top_k)[0]
                tr.rows.append(row)
                best = float(row.min()) if len(row) else np.inf
                if best < tr.best[0]:
                    tr.best = (best, fr)
                decisions += self._judge(tr, frame, face, t)
        return decisions

    def _judge(self, tr: _Track, frame, face, t) -> list[Decision]:
        s = self.settings
        if len(tr.rows) < s.frames_required:
            return []
        rows = np.array(tr.rows[-s.max_frames:])
        match = fuse(rows, self.gallery.employees, self.rule, s.frames_required)
        if match.accepted:
            tr.identity = match
            tr.session = self.liveness.begin(match.employee)
            tr.session_started = t
            return self._feed_liveness(tr, frame, t, face)
        if len(tr.rows) >= s.max_frames:
            reason = {"too_far": "unknown", "empty_gallery": "unknown"}.get(match.reason, match.reason)
            return [self._finish(tr, False, reason, {}, match)]
        return []

    def _feed_liveness(self, tr: _Track, frame, t, face=None, chip=None) -> list[Decision]:
        result = tr.session.feed(frame, face or tr.face, t)
        if result is None:
            if chip is not None and t - tr.reid_at >= self.settings.reid_every:
                self._submit_reid(tr, chip, t)
            return []
        checks = dict(result.checks or {})
        checks["passed"] = bool(result.passed)
        if not result.passed:
            return [self._finish(tr, False, f"liveness: {result.reason}", checks, tr.identity)]
        if tr.challenge_frames == 0 or chip is None:
            return [self._finish(tr, True, "matched", checks, tr.identity)]  # decided on the identifying frame
        tr.passed = checks  # accepted once this very frame is confirmed to be the same employee
        self._submit_reid(tr, chip, t)
        return []

    # -- identity during the liveness challenge
    def _submit_reid(self, tr: _Track, chip: np.ndarray, t: float) -> None:
        tr.reid_at = t
        tr.reid.append((self.pool.submit(chip), t))

    def _collect_reid(self, tr: _Track, wait: bool) -> list[Decision]:
        while tr.reid and not tr.decided and (wait or tr.reid[0][0].done()):
            future, _ = tr.reid.pop(0)
            try:
                emb = future.result()
            except Exception:  # cannot confirm who this is: fail closed once the challenge is passed
                self.stats["embed_errors"] += 1
                if tr.passed is not None and not tr.reid:
                    return [self._finish(tr, False, "liveness: identity could not be re-checked",
                                         {**tr.passed, "passed": False}, tr.identity)]
                continue
            self.stats["embedded"] += 1
            check = self._same_employee(tr.identity.employee, emb)
            if not check["same"]:
                checks = {**(tr.passed or {}), "passed": False, "identity": check}
                return [self._finish(tr, False, "liveness: identity changed during the challenge", checks,
                                     tr.identity)]
            tr.reid_done += 1
        if tr.passed is not None and not tr.reid and not tr.decided:
            checks = {**tr.passed, "identity": {"same": True, "rechecked": tr.reid_done}}
            return [self._finish(tr, True, "matched", checks, tr.identity)]
        return []

    def _same_employee(self, employee: str, emb: np.ndarray) -> dict:
        """Is this challenge frame still `employee`? Nobody else nearer, and near enough."""
        row = self.gallery.scores(emb[None, :], self.rule.top_k)[0]
        if employee not in self.gallery.employees:  # the gallery was swapped meanwhile
            return {"same": False, "distance": None}
        own = float(row[self.gallery.employees.index(employee)])
        nearest = float(row.min())
        same = own <= self.rule.threshold + self.settings.reid_slack and own <= nearest
        return {"same": bool(same), "distance": round(own, 4)}

    def _restart(self, tr: _Track, t: float) -> None:
        tr.decided, tr.retry_at, tr.identity, tr.session = False, None, None, None
        tr.rows, tr.best, tr.first_seen, tr.seen_clock = [], (np.inf, None), t, self.clock()
        tr.challenge_frames, tr.reid, tr.reid_at, tr.reid_done, tr.passed = 0, [], -1e18, 0, None

    def _finish(self, tr: _Track, accepted: bool, reason: str, liveness: dict, match: Match | None) -> Decision:
        tr.decided = True
        tr.retry_at = None if accepted else tr.last_seen + self.settings.retry_after
        for future, *_ in tr.pending + tr.reid:
            future.cancel()
        tr.pending.clear()
        tr.reid.clear()
        ms = max(0.0, (self.clock() - tr.seen_clock) * 1000.0)
        employee = match.employee if (accepted and match) else None
        return Decision(employee, accepted, reason, liveness, len(tr.rows), ms, match, tr.best[1])

    def _expire(self, t: float) -> list[Decision]:
        decisions, keep = [], []
        for tr in self.tracks:
            if t - tr.last_seen > self.settings.track_lost_after and not tr.pending and not tr.reid:
                continue  # left the view: forget it (a returning person gets a new decision)
            keep.append(tr)
            if not tr.decided and t - tr.first_seen > self._timeout(tr):
                decisions.append(self._finish(tr, False, self._undecided_reason(tr),
                                              {"passed": False} if tr.session else {}, tr.identity))
        self.tracks = keep
        return decisions

    def _timeout(self, tr: _Track) -> float:
        extra = 2 * self.settings.decision_timeout if tr.session is not None else 0.0
        return self.settings.decision_timeout + extra

    def finish(self) -> list[Decision]:
        """The source ended: judge the embeddings still in flight (no new frames will come)."""
        if not self.tracks:
            return []
        last = max(tr.last_seen for tr in self.tracks)
        frame = next((tr.best[1] for tr in self.tracks if tr.best[1] is not None), None)
        decisions = self._collect(frame, last, wait=True)
        for tr in self.tracks:  # whoever is still undecided is refused: no more frames will come
            if not tr.decided:
                decisions.append(self._finish(tr, False, self._undecided_reason(tr),
                                              {"passed": False} if tr.session else {}, tr.identity))
        return decisions

    @staticmethod
    def _undecided_reason(tr: _Track) -> str:
        if tr.session is not None:
            return "liveness_timeout"
        return "low_quality" if not tr.rows else "unknown"

    def close(self) -> None:
        self.pool.close()
