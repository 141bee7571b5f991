"""`presensi scan` with liveness wired in (contract C1): a folder of frames replaying an enrolled person's
photo is refused by the default configuration, with the checks in the output's `liveness` field, and the
same folder is accepted as that person with `[liveness] mode = "off"`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import SHARED, presensi, write_config

LFW = SHARED / "data" / "faces" / "lfw-dev"
pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason=f"{LFW} is absent: shared test photos live beside the repo")
PERSON = "Gloria_Trevi"


@pytest.fixture(scope="module")
def replay_folder(tmp_path_factory):
    """Frames of the person's photo held up to the camera and slowly tilted (what a folder source plays)."""
    from liveness_support import PhotoPose, render, room_background

    photo = cv2.imread(str(sorted((LFW / PERSON).glob("*.jpg"))[0]))
    folder = tmp_path_factory.mktemp("replay")
    rng = np.random.default_rng(4)
    start, end = PhotoPose(height_px=420), PhotoPose(height_px=420, ry=35, rx=20, dx=30)
    background = room_background(4)
    for i in range(70):
        pose = start.blend(end, min(1.0, max(0.0, (i - 25) / 15)))
        cv2.imwrite(str(folder / f"frame_{i:04d}.jpg"), render(photo, pose, background, rng, 0.7, 85))
    return folder


def scan(tmp_path, frames, liveness_toml: str):
    enrol = tmp_path / "enrol" / "emp-001"
    enrol.mkdir(parents=True)
    for path in sorted((LFW / PERSON).glob("*.jpg")):  # terminal-sized copies of all the person's photos
        cv2.imwrite(str(enrol / path.name), cv2.resize(cv2.imread(str(path)), (500, 500)))
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state", extra=liveness_toml)
    assert presensi("init", config=cfg).returncode == 0
    enrolled = presensi("enroll-photos", str(tmp_path / "enrol"), "--json", config=cfg, timeout=120)
    assert enrolled.returncode == 0, enrolled.stderr
    result = presensi("scan", "--camera", str(frames), "--fps", "10", "--json", config=cfg, timeout=180)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")], result.stderr


def test_default_config_refuses_the_replayed_photo(tmp_path, replay_folder):
    decisions, stderr = scan(tmp_path, replay_folder, "")
    about_person = [d for d in decisions if d.get("liveness")]
    assert about_person, f"no decision reached liveness: {decisions} {stderr[-2000:]}"
    assert not any(d["accepted"] for d in decisions)
    first = about_person[0]
    assert first["reason"].startswith("liveness") and first["liveness"]["passed"] is False
    assert first["liveness"]["mode"] == "auto" and "challenge" in first["liveness"]["ran"]
    assert "liveness refused: employee candidate emp-001" in stderr  # the refusal is logged, without the face


def test_liveness_off_accepts_the_same_frames_as_the_right_person(tmp_path, replay_folder):
    decisions, stderr = scan(tmp_path, replay_folder, '\n[liveness]\nmode = "off"\n')
    accepted = [d for d in decisions if d["accepted"]]
    assert accepted and accepted[0]["employee"] == "emp-001", (decisions, stderr[-2000:])
    assert accepted[0]["liveness"]["mode"] == "off" and accepted[0]["liveness"]["passed"] is True


def test_a_real_pose_change_passes_the_challenge_through_the_pipeline(tmp_path):
    """Two photos of one person (frontal, then turned to her left: yaw cue 0.01 -> 0.30) as a frame folder;
    with the challenge fixed to "Tengok ke kiri", the pipeline (HOG faces, refined by liveness with the
    5-point model) identifies her, runs the challenge and accepts."""
    from liveness_support import Landmarker, place_face, room_background

    person, frontal_name, turned_name = "Carla_Del_Ponte", "Carla_Del_Ponte_0001.jpg", "Carla_Del_Ponte_0004.jpg"
    landmarker = Landmarker()
    shots = {}
    for name in (frontal_name, turned_name):
        image = cv2.imread(str(LFW / person / name))
        shots[name] = (image, landmarker.detect(image))
    frames = tmp_path / "frames"
    frames.mkdir()
    rng, background = np.random.default_rng(9), room_background(9)
    for i in range(60):
        image, face = shots[frontal_name if i < 30 else turned_name]
        frame, _ = place_face(image, face, background, rng, target_iod=70.0)
        cv2.imwrite(str(frames / f"frame_{i:04d}.jpg"), frame)
    enrol_dir = tmp_path / "enrol" / "emp-007"
    enrol_dir.mkdir(parents=True)
    for path in sorted((LFW / person).glob("*.jpg")):
        if path.name != turned_name:
            cv2.imwrite(str(enrol_dir / path.name), cv2.resize(cv2.imread(str(path)), (500, 500)))
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state",
                       extra='\n[liveness]\nmode = "active"\nchallenges = "left"\n')
    assert presensi("init", config=cfg).returncode == 0
    assert presensi("enroll-photos", str(tmp_path / "enrol"), config=cfg, timeout=120).returncode == 0
    result = presensi("scan", "--camera", str(frames), "--fps", "10", "--json", config=cfg, timeout=180)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    accepted = [d for d in decisions if d["accepted"]]
    assert accepted and accepted[0]["employee"] == "emp-007", (decisions, result.stderr[-2000:])
    checks = accepted[0]["liveness"]
    assert checks["passed"] is True and set(checks["ran"]) == {"frozen", "challenge"}
    assert checks["challenge"]["challenge"] == "left" and checks["challenge"]["peak"] >= 0.15


@pytest.mark.parametrize("attacker_photo", ["Juan_Carlos_Ferrero/Juan_Carlos_Ferrero_0002.jpg",
                                            "Christian_Longo/Christian_Longo_0001.jpg",
                                            "Jean-Claude_Juncker/Jean-Claude_Juncker_0002.jpg"])
def test_an_in_place_swap_during_the_challenge_is_refused(tmp_path, attacker_photo):
    """The victim's photo is held up until she is identified and the prompt appears; then the attacker puts
    his own head in its place (same position and size, so the tracker keeps its track) and turns left as
    asked. The challenge alone is satisfied by a real head turn; the re-identification during the challenge
    sees another person and refuses."""
    from liveness_support import Landmarker, place_face, room_background

    person, frontal_name = "Carla_Del_Ponte", "Carla_Del_Ponte_0001.jpg"
    landmarker = Landmarker()
    victim = cv2.imread(str(LFW / person / frontal_name))
    attacker = cv2.imread(str(LFW / attacker_photo))
    shots = {"victim": (victim, landmarker.detect(victim)), "attacker": (attacker, landmarker.detect(attacker))}
    frames = tmp_path / "frames"
    frames.mkdir()
    rng, background = np.random.default_rng(9), room_background(9)
    for i in range(60):
        image, face = shots["victim" if i < 30 else "attacker"]
        frame, _ = place_face(image, face, background, rng, target_iod=70.0)
        cv2.imwrite(str(frames / f"frame_{i:04d}.jpg"), frame)
    enrol_dir = tmp_path / "enrol" / "emp-007"
    enrol_dir.mkdir(parents=True)
    for path in sorted((LFW / person).glob("*.jpg")):
        cv2.imwrite(str(enrol_dir / path.name), cv2.resize(cv2.imread(str(path)), (500, 500)))
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state",
                       extra='\n[liveness]\nmode = "active"\nchallenges = "left"\n')
    assert presensi("init", config=cfg).returncode == 0
    assert presensi("enroll-photos", str(tmp_path / "enrol"), config=cfg, timeout=120).returncode == 0
    result = presensi("scan", "--camera", str(frames), "--fps", "10", "--json", config=cfg, timeout=180)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert decisions and not any(d["accepted"] for d in decisions), (decisions, result.stderr[-2000:])
    refused = [d for d in decisions if d["reason"].startswith("liveness")]
    assert refused and "identity" in refused[0]["reason"], decisions
    assert refused[0]["liveness"]["passed"] is False
