"""Presentation-attack detection between identification and the punch (contract C1).

``from_config(cfg.liveness)`` returns a policy object; the face pipeline calls ``policy.begin(employee)``
for each candidate and feeds the session frames until it returns a ``LivenessResult``. The session's
``prompt`` is the Bahasa Indonesia text to show. Nothing here logs or stores face images: a refused
attempt is logged with the employee candidate, the reason and the scores only.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("presensi.liveness")

MODES = ("off", "passive", "active", "passive+active", "auto")


@dataclass
class LivenessResult:
    passed: bool
    reason: str
    checks: dict  # JSON-able: which checks ran and their scores


def from_config(cfg_liveness, on_refused: Callable[[dict], None] | None = None,
                rng: random.Random | None = None):
    """The liveness policy for a ``[liveness]`` config section.

    Never raises for a missing or corrupt model file: the problem is kept in ``policy.problem`` (shown by
    `presensi status` and `presensi scan`), auto mode falls back to the challenge, and passive modes
    refuse each attempt with a reason that names the file and the fix."""
    from terminal.liveness.policy import LivenessPolicy

    return LivenessPolicy(cfg_liveness, on_refused=on_refused, rng=rng)


def status_part(cfg) -> dict:
    """`presensi status`: the liveness mode and whether the passive model files load."""
    return from_config(cfg.liveness).status()


def audit_refusals(punch_log) -> Callable[[dict], None]:
    """An ``on_refused`` hook writing each refused attempt to the punch log's audit table (no image)."""
    def record(details: dict) -> None:
        try:
            punch_log.audit("liveness", "attempt_refused", details)
        except Exception as e:  # the refusal itself stands even if the audit write fails
            log.error("could not write the refused attempt to the audit log: %s", e)
    return record
