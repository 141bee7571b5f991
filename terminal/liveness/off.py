"""The trivial "off" liveness object (contract C1): every face passes at once, and says so in its checks.

The real checks are its siblings (``terminal.liveness.from_config`` chooses); this one lets the face pipeline
run alone and is what ``[liveness] mode = "off"`` means.
"""

from __future__ import annotations

from terminal.liveness import LivenessResult


class _OffSession:
    prompt: str | None = None

    def feed(self, frame_bgr, face, t: float) -> LivenessResult:
        return LivenessResult(passed=True, reason="liveness checks are off", checks={"mode": "off"})


class OffLiveness:
    def begin(self, employee_id: str) -> _OffSession:
        return _OffSession()
