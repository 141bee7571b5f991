"""Replay attacks against the shipped default liveness policy.

A still photo of an enrolled person (../shared/data/faces/lfw-dev) is shown to the camera as a frame
sequence rendered by tests/liveness_support.py: moved, rotated in the image plane, scaled (brought
closer), tilted in perspective on one or two axes, bent around an off-centre axis, blurred, JPEG
recompressed, with fresh sensor noise in every frame. The attacker watches the screen and moves the picture
the way that best imitates the requested head turn. The same frames, with liveness off, are recognised as
the right person by dlib's embedding, so the refusals are not blindness.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from conftest import SHARED

from terminal import liveness
from terminal.config import Liveness

LFW = SHARED / "data" / "faces" / "lfw-dev"
pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason=f"{LFW} is absent: shared test photos live beside the repo")

PEOPLE = 15          # enrolled people whose photo is replayed
FPS = 6.0            # frames per second the terminal's pipeline looks at (a Pi keeps up with about this)
MATCH_DISTANCE = 0.5  # dlib distance accepted as the same person for the identity check


def enrolled_people(landmarker) -> list[tuple[str, np.ndarray, object]]:
    people = []
    for folder in sorted(p for p in LFW.iterdir() if p.is_dir())[::7]:
        photo_path = sorted(folder.glob("*.jpg"))[0]
        photo = cv2.imread(str(photo_path))
        face = landmarker.detect(photo)
        if face is not None:
            people.append((folder.name, photo, face))
        if len(people) == PEOPLE:
            break
    return people


@pytest.fixture(scope="module")
def attacks():
    from liveness_support import ATTACK_STYLES, Landmarker, simulate_replay

    landmarker = Landmarker()
    people = enrolled_people(landmarker)
    assert len(people) == PEOPLE
    policy = liveness.from_config(Liveness(), rng=random.Random(2026))  # the shipped default
    outcomes = []
    for i, (name, photo, face) in enumerate(people):
        for j, style in enumerate(ATTACK_STYLES):
            outcome = simulate_replay(policy.begin(name), photo, face, landmarker, seed=1000 * i + j,
                                      style=style, fps=FPS, max_frames=int(FPS * 12))
            outcomes.append((name, outcome))
    gallery = {name: landmarker.embedding(photo, face) for name, photo, face in people}
    return {"outcomes": outcomes, "gallery": gallery, "landmarker": landmarker, "policy": policy}


def test_default_policy_is_auto_and_needs_no_model_file():
    cfg = Liveness()
    assert cfg.mode == "auto" and cfg.minifasnet_v2 is None and cfg.auto_trust == 1.0


def test_default_policy_refuses_replayed_photos(attacks):
    outcomes = attacks["outcomes"]
    accepted = [(name, o.style, o.challenge, o.result.checks) for name, o in outcomes
                if o.result is not None and o.result.passed]
    refused = len(outcomes) - len(accepted)
    assert len(outcomes) >= 100
    assert refused / len(outcomes) >= 0.99, f"accepted replays: {accepted}"
    decided = [o for _, o in outcomes if o.result is not None]
    assert len(decided) == len(outcomes), "every attempt ends with a decision, not a hang"
    for o in decided:
        assert "challenge" in o.result.checks["ran"] and "frozen" in o.result.checks["ran"]
        assert o.result.reason


def test_the_same_frames_are_the_right_person_with_liveness_off(attacks):
    """Refusal is not blindness: the frames shown during the challenge are recognised."""
    off = liveness.from_config(Liveness(mode="off"))
    names = list(attacks["gallery"])
    templates = np.stack([attacks["gallery"][n] for n in names])
    right = 0
    for name, o in attacks["outcomes"]:
        assert off.begin(name).feed(o.probe_frame, o.probe_face, 0.0).passed
        emb = attacks["landmarker"].embedding(o.probe_frame, o.probe_face)
        dist = np.linalg.norm(templates - emb, axis=1)
        best = int(np.argmin(dist))
        right += names[best] == name and dist[best] <= MATCH_DISTANCE
    assert right / len(attacks["outcomes"]) >= 0.95, f"only {right} of {len(attacks['outcomes'])} recognised"


def test_refusals_are_logged_without_the_face(attacks, caplog, tmp_path):
    """A refused attempt is logged with the candidate, reason and scores, and audited in the punch log."""
    from liveness_support import simulate_replay

    from terminal.log import punchlog

    punchlog.init(tmp_path)
    name, o = attacks["outcomes"][0]
    with punchlog.PunchLog(tmp_path) as log:
        policy = liveness.from_config(Liveness(), on_refused=liveness.audit_refusals(log), rng=random.Random(1))
        photo_path = sorted((LFW / name).glob("*.jpg"))[0]
        photo = cv2.imread(str(photo_path))
        face = attacks["landmarker"].detect(photo)
        with caplog.at_level("WARNING", logger="presensi.liveness"):
            out = simulate_replay(policy.begin(name), photo, face, attacks["landmarker"], seed=5, style="shear",
                                  fps=FPS)
        assert not out.result.passed
        entries = log.audit_entries()
        assert entries[0]["action"] == "attempt_refused" and entries[0]["actor"] == "liveness"
        details = entries[0]["details"]
        assert details["employee_candidate"] == name and details["reason"] == out.result.reason
        assert "challenge" in details["checks"]
    text = caplog.text
    assert f"liveness refused: employee candidate {name}" in text
    flat = repr(details) + text
    assert "array" not in flat and len(flat) < 5000  # scores only: no pixels, no landmarks dump
