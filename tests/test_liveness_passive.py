"""Passive liveness (MiniFASNetV2 + V1SE through cv2.dnn) on the vendor's samples, the policy around it,
and what happens when a model file is missing or corrupt (a refusal that names the file and the fix,
never an exception at punch time)."""

from __future__ import annotations

import logging
import random

import cv2
import numpy as np
import pytest
from conftest import SHARED

from terminal import liveness
from terminal.config import ConfigError, Liveness
from terminal.liveness.passive import ModelFileError, PassiveChecker, crop_box

MODELS = SHARED / "models" / "liveness"
SAMPLES = SHARED / "data" / "liveness"
pytestmark = pytest.mark.skipif(not MODELS.is_dir() or not SAMPLES.is_dir(),
                                reason=f"{SHARED} is absent: shared models and samples live beside the repo")
V2, V1SE = str(MODELS / "MiniFASNetV2.onnx"), str(MODELS / "MiniFASNetV1SE.onnx")


@pytest.fixture(scope="module")
def landmarker():
    from liveness_support import Landmarker
    return Landmarker()


@pytest.fixture(scope="module")
def samples(landmarker):
    out = {}
    for name in ("image_T1", "image_F1", "image_F2"):
        image = cv2.imread(str(SAMPLES / f"{name}.jpg"))
        face = landmarker.detect(image)
        assert face is not None, f"no face found in {name}"
        out[name] = (image, face)
    return out


def camera_frames(image: np.ndarray, n: int, seed: int = 0):
    """The same scene seen n times by a camera: identical content, fresh sensor noise in every frame."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        noise = rng.normal(0, 2.0, image.shape).astype(np.int16)
        yield np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def run_session(policy, image, face, frames=6):
    session = policy.begin("199001012020121001")
    for i, frame in enumerate(camera_frames(image, frames)):
        result = session.feed(frame, face, i / 10)
        if result is not None:
            return result
    return None


def test_samples_real_passes_and_spoofs_fail(samples):
    checker = PassiveChecker(V2, V1SE)
    scores = {name: checker.scores(img, face.box) for name, (img, face) in samples.items()}
    assert scores["image_T1"]["real"] >= 0.9, scores
    assert scores["image_F1"]["real"] < 0.5 and scores["image_F2"]["real"] < 0.5, scores
    for s in scores.values():  # both models ran and the fused score is their mean
        assert s["real"] == pytest.approx((s["MiniFASNetV2"] + s["MiniFASNetV1SE"]) / 2, abs=1e-6)


def test_passive_policy_on_samples_records_its_checks(samples):
    policy = liveness.from_config(Liveness(mode="passive", minifasnet_v2=V2, minifasnet_v1se=V1SE))
    real = run_session(policy, *samples["image_T1"])
    assert real.passed, real
    assert real.checks["ran"] == ["frozen", "passive"] and real.checks["passive"]["real"] >= 0.9
    for name in ("image_F1", "image_F2"):
        spoof = run_session(policy, *samples[name])
        assert not spoof.passed and "passive check" in spoof.reason, (name, spoof)
        assert spoof.checks["passive"]["real"] < 0.5


def test_crop_uses_each_models_scale_and_stays_inside_the_image():
    shape = (480, 640, 3)
    l2, t2, r2, b2 = crop_box(shape, (270, 190, 100, 100), 2.7)
    assert (r2 - l2, b2 - t2) == (270, 270)
    l4, t4, r4, b4 = crop_box(shape, (270, 190, 100, 100), 4.0)
    assert (r4 - l4, b4 - t4) == (400, 400) and (l4, t4) == (120, 40)
    # A face at the corner: the crop shifts back inside instead of padding.
    left, top, right, bottom = crop_box(shape, (0, 0, 100, 100), 4.0)
    assert (left, top) == (0, 0) and (right, bottom) == (400, 400)
    # A face too large for the scale: the scale shrinks to what fits.
    left, top, right, bottom = crop_box(shape, (200, 100, 300, 300), 4.0)
    assert bottom - top <= 479 and right - left <= 639 and left >= 0 and top >= 0


def test_identical_frames_are_refused_as_a_still_picture(samples):
    image, face = samples["image_T1"]  # a real face, but fed as the very same frame again and again
    policy = liveness.from_config(Liveness(mode="passive", minifasnet_v2=V2, minifasnet_v1se=V1SE))
    session = policy.begin("e1")
    result = None
    for i in range(5):
        result = session.feed(image.copy(), face, i / 10) or result
        if result:
            break
    assert result is not None and not result.passed and "identical frames" in result.reason
    assert result.checks["frozen"]["max_difference"] == 0.0


@pytest.mark.parametrize("problem", ["missing", "garbage", "truncated", "unset"])
def test_model_problems_give_a_clear_refusal_not_a_crash(tmp_path, samples, caplog, problem):
    bad = tmp_path / "MiniFASNetV2.onnx"
    if problem == "garbage":
        bad.write_bytes(b"<html>404 not found</html>" * 10)
    elif problem == "truncated":
        data = open(V2, "rb").read()
        bad.write_bytes(data[: len(data) // 3])
    v2 = None if problem == "unset" else str(bad)
    if problem not in ("unset",):
        with pytest.raises(ModelFileError) as err:
            PassiveChecker(v2, V1SE)
        assert str(bad) in str(err.value) and "presensi models fetch" in str(err.value)
        assert ("not found" if problem == "missing" else "corrupt") in str(err.value)
    with caplog.at_level(logging.WARNING, logger="presensi.liveness"):
        policy = liveness.from_config(Liveness(mode="passive", minifasnet_v2=v2, minifasnet_v1se=V1SE))
    assert policy.problem and "presensi models fetch" in policy.problem and not policy.status()["ok"]
    result = run_session(policy, *samples["image_T1"])
    assert not result.passed and "passive check unavailable" in result.reason
    assert "presensi models fetch" in result.reason
    assert (str(bad) if v2 else "minifasnet_v2") in result.reason
    # auto mode degrades to the challenge instead of refusing everybody
    auto = liveness.from_config(Liveness(mode="auto", minifasnet_v2=v2, minifasnet_v1se=V1SE),
                                rng=random.Random(0))
    assert auto.status()["ok"] and auto.problem
    session = auto.begin("e1")
    frames = camera_frames(samples["image_T1"][0], 3)
    assert all(session.feed(f, samples["image_T1"][1], i / 10) is None for i, f in enumerate(frames))
    assert session.prompt in ("Tengok ke kiri", "Tengok ke kanan")
    assert "challenge" in session.checks["ran"] and "unavailable" in session.checks["passive"]


def test_bad_policy_settings_are_config_errors():
    with pytest.raises(ConfigError, match="challenges"):
        liveness.from_config(Liveness(mode="active", challenges="left,blink"))
    with pytest.raises(ConfigError, match="mode"):
        liveness.from_config(Liveness(mode="sometimes"))


def test_off_mode_passes_at_once_and_says_so(samples):
    policy = liveness.from_config(Liveness(mode="off"))
    result = policy.begin("e1").feed(*samples["image_F1"], 0.0)
    assert result.passed and result.checks == {"mode": "off", "ran": []}
