"""Open-set identification on a quarter of the LFW dev set (42 identities, every identity a never-enrolled
stranger in one of 3 folds) at the operating point shipped in the configuration defaults.

The full table over operating points (and the face_recognition package on the same split) is
bench/face_eval.py; this test keeps CI's CPU bounded by embedding each photo once per session."""

from __future__ import annotations

import pytest
from face_support import LFW, needs_shared

from terminal import config
from terminal.face import evaluation
from terminal.face.detect import HogDetector
from terminal.face.gallery import Rule

pytestmark = needs_shared


@pytest.fixture(scope="session")
def lfw_quarter():
    rows = evaluation.read_manifest(LFW)
    identities = sorted({identity for _, identity in rows})[::4]
    rows = [r for r in rows if r[1] in identities]
    return evaluation.embed_samples(LFW, HogDetector(), rows, with_views=False, cache=None)


def shipped_rule() -> Rule:
    cfg = config.from_dict({"device": {"id": "t"}, "paths": {"state_dir": "/nonexistent"}})
    return Rule.from_config(cfg.face)


def test_shipped_operating_point_accepts_no_stranger_and_no_wrong_person(lfw_quarter):
    result = evaluation.evaluate(lfw_quarter, shipped_rule())
    assert result["stranger_probes"] >= 120 and result["genuine_probes"] >= 120
    assert result["strangers_accepted"] == 0, result
    assert result["wrong_identity"] == 0, result
    assert result["genuine_accepted_pct"] >= 80.0, result
    assert result["rank1_pct"] >= 95.0, result


def test_nearest_template_under_the_library_default_accepts_strangers(lfw_quarter):
    """Why the rule exists: the same embeddings with face_recognition's rule (nearest <= 0.6)."""
    library = evaluation.evaluate(lfw_quarter, Rule(threshold=0.6, margin=0.0, top_k=1))
    ours = evaluation.evaluate(lfw_quarter, shipped_rule())
    assert library["strangers_accepted_pct"] >= 10.0, library
    assert ours["strangers_accepted_pct"] < library["strangers_accepted_pct"]


def test_split_enrols_one_to_three_photos_and_keeps_strangers_out(lfw_quarter):
    split = evaluation.make_split(lfw_quarter, fold=0)
    assert {len(t) for t in split.gallery.values()} <= {1, 2, 3}
    assert len({len(t) for t in split.gallery.values()}) > 1
    assert not {s.identity for s in split.strangers} & set(split.gallery)
    assert {s.identity for s in split.genuine} <= set(split.gallery)
