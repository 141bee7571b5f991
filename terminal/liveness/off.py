"""The trivial "off" liveness object (contract C1): every face passes at once, and says so in its checks.

The real checks live in terminal/liveness/ (``terminal.liveness.from_config``); this one lets the face
pipeline run alone and is what ``[liveness] mode = "off"`` means.
"""

from __future__ import annotations

from dataclasses import dataclass

try:  # the liveness package defines the result type (C1); keep working before it lands
    from terminal.liveness import LivenessResult
except ImportError:  # pragma: no cover - only until terminal/liveness exists
    @dataclass
    class LivenessResult:  # type: ignore[no-redef]
        passed: bool
        reason: str
        checks: dict


class _OffSession:
    prompt: str | None = None

    def feed(self, frame_bgr, face, t: float) -> LivenessResult:
        return LivenessResult(passed=True, reason="liveness checks are off", checks={"mode": "off"})


class OffLiveness:
    def begin(self, employee_id: str) -> _OffSession:
        return _OffSession()
