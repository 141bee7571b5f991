"""Face identification end to end on real photos: encrypted templates, the gallery rule, enrolment,
`presensi identify` (with damaged files), `presensi scan` on frame folders (with --record), tracking,
motion gating, live enrolment and both detectors."""

from __future__ import annotations

import json
import os
import shutil
import stat

import cv2
import numpy as np
import pytest
from conftest import presensi, write_config
from face_support import EXAMPLES, YUNET, background, frame_with, lfw, needs_shared, write_sequence

from terminal.face import detect, gallery, pipeline, quality, stills
from terminal.face.enrol import LiveEnrolment
from terminal.face.store import TemplateStore, TemplateStoreError
from terminal.log import punchlog

pytestmark = needs_shared

ENROLLED = {"emp-bill": ("Bill_Clinton", (1, 2)), "emp-boris": ("Boris_Becker", (1, 2)),
            "emp-amelie": ("Amelie_Mauresmo", (1, 2))}
STRANGER = ("Cruz_Bustamante", 3)


# ------------------------------------------------------------------ fixtures (embeddings computed once)
@pytest.fixture(scope="module")
def hog():
    return detect.HogDetector(640)


@pytest.fixture(scope="module")
def templates(hog):
    out = {}
    for emp, (ident, nums) in ENROLLED.items():
        out[emp] = [stills.analyse(stills.read_image(lfw(ident, n)), hog)[0].embedding for n in nums]
    return out


@pytest.fixture
def terminal(tmp_path, templates):
    """An initialised terminal (liveness off, in-process embedding) with the three employees enrolled."""
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state",
                       '\n[face]\nworkers = 1\n\n[liveness]\nmode = "off"\n')
    assert presensi("init", config=cfg).returncode == 0
    TemplateStore(tmp_path / "state").save(templates)
    return cfg


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------ templates at rest
def test_templates_are_encrypted_with_a_private_key_and_tampering_is_refused(tmp_path, templates):
    store = TemplateStore(tmp_path)
    store.save(templates)
    blob = store.path.read_bytes()
    assert templates["emp-bill"][0].astype("<f4").tobytes()[:16] not in blob
    assert b"emp-bill" not in blob  # even the employee ids are inside the ciphertext
    assert stat.S_IMODE(os.stat(store.key_path).st_mode) == 0o600
    loaded = store.load()
    assert np.allclose(loaded["emp-bill"][1], templates["emp-bill"][1])

    store.path.write_bytes(blob[:40] + bytes([blob[40] ^ 1]) + blob[41:])
    with pytest.raises(TemplateStoreError, match="modified"):
        store.load()
    store.path.write_bytes(blob)
    store.key_path.write_bytes(os.urandom(32))
    with pytest.raises(TemplateStoreError, match="wrong key"):
        store.load()
    store.key_path.unlink()
    with pytest.raises(TemplateStoreError, match="key file missing"):
        store.load()


# ------------------------------------------------------------------ the rule
def test_vectorised_scores_equal_a_plain_loop():
    rng = np.random.default_rng(7)
    tpl = {f"e{i}": list(rng.normal(0, 0.1, (1 + i % 4, 128))) for i in range(9)}
    gal = gallery.Gallery(tpl)
    probes = rng.normal(0, 0.1, (5, 128))
    for k in (1, 2, 3):
        got = gal.scores(probes, k)
        for p, row in zip(probes, got, strict=True):
            for j, emp in enumerate(gal.employees):
                d = sorted(np.linalg.norm(np.array(tpl[emp]) - p, axis=1))
                assert row[j] == pytest.approx(np.mean(d[:k]), abs=1e-5)


def test_rule_refuses_far_and_ambiguous_faces():
    a, b = np.zeros(128), np.zeros(128)
    b[0] = 1.0
    gal = gallery.Gallery({"a": [a], "b": [b]})
    rule = gallery.Rule(threshold=0.51, margin=0.09, top_k=1)
    near_a = a.copy()
    near_a[0] = 0.2
    middle = a.copy()
    middle[0] = 0.48
    far = a.copy()
    far[1] = 0.8
    got = gal.identify(np.array([near_a, middle, far]), rule)
    assert [(m.employee, m.reason) for m in got] == [("a", "matched"), (None, "ambiguous"), (None, "too_far")]


# ------------------------------------------------------------------ enroll-photos
def test_enroll_photos_reports_each_photo(tmp_path):
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state")
    root = tmp_path / "photos"
    (root / "emp-bill").mkdir(parents=True)
    (root / "emp-crowd").mkdir()
    for n in (1, 2):
        shutil.copy(lfw("Bill_Clinton", n), root / "emp-bill" / f"{n}.jpg")
    shutil.copy(EXAMPLES / "examples" / "two_people.jpg", root / "emp-crowd" / "group.jpg")
    cv2.imwrite(str(root / "emp-crowd" / "wall.png"), background(0, (300, 300)))
    img = cv2.imread(str(lfw("Boris_Becker", 1)))
    cv2.imwrite(str(root / "emp-crowd" / "blurred.jpg"), cv2.GaussianBlur(img, (0, 0), 3))
    cv2.imwrite(str(root / "emp-crowd" / "tiny.jpg"), cv2.resize(img, (120, 120)))
    (root / "emp-crowd" / "notes.jpg").write_text("not a photo")

    result = presensi("enroll-photos", str(root), "--json", config=cfg)
    lines = json_lines(result.stdout)
    by_photo = {os.path.basename(x["photo"]): x["result"] for x in lines if "photo" in x}
    assert by_photo == {"1.jpg": "accepted", "2.jpg": "accepted", "group.jpg": "several_faces",
                        "wall.png": "no_face", "blurred.jpg": by_photo["blurred.jpg"],
                        "tiny.jpg": "too_small", "notes.jpg": "unreadable"}
    assert by_photo["blurred.jpg"] in ("blurred", "no_face")
    assert lines[-1]["summary"] == {"photos": 7, "accepted": 2, "rejected": 5, "employees_enrolled": 1}
    assert result.returncode == 0
    assert TemplateStore(tmp_path / "state").load().keys() == {"emp-bill"}


def test_enroll_photos_with_nothing_usable_fails_with_advice(tmp_path):
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state")
    (tmp_path / "p" / "emp-x").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "p" / "emp-x" / "wall.png"), background(0, (200, 200)))
    result = presensi("enroll-photos", str(tmp_path / "p"), config=cfg)
    assert result.returncode != 0
    assert "no photo was accepted" in result.stderr


# ------------------------------------------------------------------ identify
def test_identify_names_enrolled_people_refuses_strangers_and_survives_bad_files(terminal, tmp_path):
    good = lfw("Bill_Clinton", 3)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(data[:200] + os.urandom(3000) + data[-2:])
    text = tmp_path / "readme.png"
    text.write_text("hello")
    images = [str(good), str(truncated), str(corrupt), str(text), str(tmp_path / "missing.jpg"),
              str(lfw(*STRANGER))]
    result = presensi("identify", *images, "--json", config=terminal)
    lines = json_lines(result.stdout)
    assert [x["image"] for x in lines] == images
    assert lines[0]["faces"][0]["employee"] == "emp-bill"
    assert set(lines[0]["faces"][0]) == {"employee", "distance", "margin", "box"}
    assert lines[0]["faces"][0]["distance"] <= 0.51 and lines[0]["ms"] > 0
    assert "truncated JPEG" in lines[1]["error"]
    assert "error" in lines[2] and "corrupt" in lines[2]["error"]
    assert "not an image" in lines[3]["error"]
    assert "not found" in lines[4]["error"]
    assert [f["employee"] for f in lines[5]["faces"]] == [None]
    assert result.returncode == 1 and "4 of 6 images could not be read" in result.stderr


def test_identify_without_enrolment_says_what_to_do(tmp_path):
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state")
    result = presensi("identify", str(lfw("Bill_Clinton", 3)), config=cfg)
    assert result.returncode != 0 and "enroll-photos" in result.stderr


# ------------------------------------------------------------------ scan
def test_scan_records_one_face_punch_with_evidence(terminal, tmp_path):
    frames = write_sequence(tmp_path / "frames", [(None, 6), (lfw("Boris_Becker", 3), 14), (None, 4)])
    result = presensi("scan", "--camera", str(frames), "--json", "--record", "--fps", "15", config=terminal,
                      timeout=120)
    assert result.returncode == 0, result.stderr
    decisions = [x for x in json_lines(result.stdout)]
    assert len(decisions) == 1, decisions
    d = decisions[0]
    assert set(d) == {"employee", "accepted", "reason", "liveness", "frames", "ms", "punch"}  # punch: --record
    assert d["employee"] == "emp-boris" and d["accepted"] is True and d["reason"] == "matched"
    assert d["liveness"] == {"mode": "off", "passed": True}
    assert d["frames"] >= 3 and d["ms"] > 0
    log = json_lines(presensi("log", "list", "--json", config=terminal).stdout)[0]
    assert [(r["employee"], r["method"]) for r in log] == [("emp-boris", "face")]
    details = json.loads(log[0]["details"]) if isinstance(log[0]["details"], str) else log[0]["details"]
    assert details["candidate"] == "emp-boris" and details["frames"] == d["frames"]
    assert details["distance"] <= details["threshold"] and details["margin"] >= details["margin_required"]
    photo = terminal.parent / "state" / log[0]["photo_path"]
    assert cv2.imread(str(photo)).shape == (480, 640, 3)
    assert '"camera_fault": "ended"' in result.stderr  # the file source ending is reported


def test_scan_record_goes_through_the_punch_service_kind_repeat_and_roster(terminal, tmp_path):
    """`presensi scan --record` punches as the daemon does: a schedule kind, no second record within the
    repeat interval, and nobody recorded who is not in an installed roster."""
    frames = write_sequence(tmp_path / "frames", [(None, 6), (lfw("Boris_Becker", 3), 14), (None, 4)])
    scan = ("scan", "--camera", str(frames), "--json", "--record", "--fps", "15")
    first = json_lines(presensi(*scan, config=terminal, timeout=120).stdout)
    assert [d["punch"]["recorded"] for d in first] == [True]
    again = presensi(*scan, config=terminal, timeout=120)
    assert again.returncode == 0, again.stderr
    second = json_lines(again.stdout)
    assert [(d["punch"]["recorded"], d["punch"]["acknowledged"]) for d in second] == [(False, True)]
    assert second[0]["punch"]["message"].startswith("Sudah tercatat")
    log = json_lines(presensi("log", "list", "--json", config=terminal).stdout)[0]
    assert len(log) == 1 and punchlog.kind_of(log[0]) == first[0]["punch"]["kind"] != ""  # derived beside it

    from terminal.punch import roster
    roster.install(terminal.parent / "state", version=1,
                   employees=[{"id": "emp-bill", "name": "Bill", "uid": 1, "pin_allowed": True}])
    third = json_lines(presensi(*scan, config=terminal, timeout=120).stdout)
    assert [d["punch"]["refused"] for d in third] == [True]
    assert "tidak ada di daftar pegawai" in third[0]["punch"]["message"]
    assert len(json_lines(presensi("log", "list", "--json", config=terminal).stdout)[0]) == 1


def test_scan_refuses_a_stranger_and_records_nothing(terminal, tmp_path):
    frames = write_sequence(tmp_path / "frames", [(lfw(*STRANGER), 14)])
    text = terminal.read_text().replace("workers = 1", "workers = 2")  # embeddings in 2 worker processes
    terminal.write_text(text)
    result = presensi("scan", "--camera", str(frames), "--json", "--record", "--fps", "15", config=terminal,
                      timeout=120)
    decisions = json_lines(result.stdout)
    assert decisions and all(not d["accepted"] and d["employee"] is None for d in decisions)
    assert decisions[0]["reason"] in ("unknown", "ambiguous", "disagree")
    assert json_lines(presensi("log", "list", "--json", config=terminal).stdout)[0] == []


def test_scan_of_a_missing_source_is_a_clear_error(terminal, tmp_path):
    result = presensi("scan", "--camera", str(tmp_path / "nope"), config=terminal)
    # the error names what a source may be and the way to name its kind
    assert result.returncode != 0 and "nope: not auto" in result.stderr
    assert "a folder of frames" in result.stderr and "[camera] kind" in result.stderr


# ------------------------------------------------------------------ tracking, motion gate, live enrolment
def make_pipeline(det, templates, settings=pipeline.PipelineSettings()):
    return pipeline.FacePipeline(det, gallery.Gallery(templates), gallery.Rule(), quality.QualityLimits(),
                                 settings)


def test_decided_face_is_not_embedded_again_and_empty_scene_skips_detection(hog, templates):
    pl = make_pipeline(hog, templates)
    t, decisions = 0.0, []
    for i in range(30):  # 2 s of an empty, static scene at 15 fps
        t += 1 / 15
        decisions += pl.process(background(i), t, wait=True)
    assert pl.stats["detected_frames"] <= 3  # first frame + the once-a-second idle look
    for i in range(30):  # the same person stays 2 s in view
        t += 1 / 15
        decisions += pl.process(frame_with(lfw("Amelie_Mauresmo", 3), i), t, wait=True)
    assert [(d.employee, d.accepted) for d in decisions] == [("emp-amelie", True)]
    assert pl.stats["embedded"] == decisions[0].frames  # nothing embedded after the decision
    for i in range(30):  # leaves; comes back: a new decision
        t += 1 / 15
        pl.process(background(i), t, wait=True)
    for i in range(10):
        t += 1 / 15
        decisions += pl.process(frame_with(lfw("Amelie_Mauresmo", 4), i), t, wait=True)
    assert [d.employee for d in decisions] == ["emp-amelie", "emp-amelie"]


def test_a_refused_face_gets_another_attempt_while_it_stays(hog, templates):
    pl = make_pipeline(hog, templates, pipeline.PipelineSettings(max_frames=3, retry_after=0.5))
    t, decisions = 0.0, []
    for i in range(30):
        t += 1 / 15
        decisions += pl.process(frame_with(lfw(*STRANGER), i), t, wait=True)
    assert len(decisions) >= 2 and not any(d.accepted for d in decisions)
    assert all(d.frames == 3 for d in decisions)


def test_face_that_never_passes_the_gate_is_refused_after_the_timeout(hog, templates):
    pl = make_pipeline(hog, templates, pipeline.PipelineSettings(decision_timeout=1.0))
    dark = [cv2.convertScaleAbs(frame_with(lfw("Bill_Clinton", 3), i), alpha=0.25) for i in range(3)]
    t, decisions = 0.0, []
    for i in range(25):
        t += 1 / 15
        decisions += pl.process(dark[i % 3], t, wait=True)
    assert [(d.accepted, d.reason) for d in decisions] == [(False, "low_quality")]
    assert pl.stats["embedded"] == 0 and pl.stats["quality_rejected"] > 0


def test_live_enrolment_collects_varied_frames_of_one_person(hog):
    limits = quality.QualityLimits()
    enrol = LiveEnrolment("emp-new", hog, limits, needed=2)
    assert enrol.feed(background(0)) == "no_face"
    assert enrol.feed(frame_with(lfw("Boris_Becker", 3), 0)) == "accepted"
    assert enrol.feed(frame_with(lfw("Boris_Becker", 3), 1)) == "similar"  # same pose: adds nothing
    assert enrol.feed(frame_with(lfw("Cruz_Bustamante", 1), 0)) == "inconsistent"
    assert enrol.feed(frame_with(lfw("Boris_Becker", 4), 0)) == "accepted"
    assert enrol.done and len(enrol.templates) == 2


@pytest.mark.skipif(not YUNET.is_file(), reason=f"{YUNET} not present")
def test_yunet_and_hog_agree_on_the_face_and_which_eye_is_left(hog, templates):
    yunet = detect.YuNetDetector(str(YUNET), 640)
    frame = frame_with(lfw("Bill_Clinton", 3), 0)
    for det in (hog, yunet):
        found = stills.analyse(frame, det)
        assert len(found) == 1
        face = found[0].face
        assert face.left_eye[0] > face.right_eye[0]  # the subject's left eye is on the image's right
        match = gallery.Gallery(templates).identify(found[0].embedding[None, :], gallery.Rule())[0]
        assert match.employee == "emp-bill"
    raw = yunet.detect(frame)[0]
    assert raw.landmarks.shape == (5, 2) and raw.left_eye[0] > raw.right_eye[0]


def test_yunet_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(detect.DetectorError, match="not found"):
        detect.YuNetDetector(str(tmp_path / "none.onnx"))


class TwoFrameLiveness:
    """A liveness object per contract C1 that decides on its second frame (the real ones are in
    terminal/liveness/); records what the pipeline hands it."""

    def __init__(self, passed: bool):
        self.passed, self.begun, self.fed = passed, [], []

    def begin(self, employee_id):
        self.begun.append(employee_id)
        outer = self

        class Session:
            prompt = "Tengok ke kiri"

            def feed(self, frame, face, t):
                outer.fed.append((frame.shape, face))
                if len(outer.fed) < 2:
                    return None
                from terminal.liveness.off import LivenessResult
                return LivenessResult(outer.passed, "test verdict", {"test": {"score": 0.1}})

        return Session()


@pytest.mark.parametrize("passed", [True, False])
def test_liveness_hook_runs_after_identification_and_decides(hog, templates, passed):
    live = TwoFrameLiveness(passed)
    pl = pipeline.FacePipeline(hog, gallery.Gallery(templates), gallery.Rule(), quality.QualityLimits(),
                               liveness=live)
    t, decisions, prompts = 0.0, [], set()
    for i in range(20):
        t += 1 / 15
        decisions += pl.process(frame_with(lfw("Bill_Clinton", 3), i), t, wait=True)
        prompts.add(pl.prompt)
    assert live.begun == ["emp-bill"]
    assert "Tengok ke kiri" in prompts
    face = live.fed[-1][1]
    assert face.left_eye[0] > face.right_eye[0] and face.landmarks is not None
    d = decisions[0]
    assert len(decisions) == 1
    # a pass on a challenge frame counts only once that frame was re-identified as the same employee
    rechecked = {"identity": {"same": True, "rechecked": 1}} if passed else {}
    assert d.accepted is passed and d.liveness == {"test": {"score": 0.1}, "passed": passed, **rechecked}
    assert d.employee == ("emp-bill" if passed else None)
    assert d.reason == ("matched" if passed else "liveness: test verdict")


def test_templates_published_in_the_roster_join_the_gallery(tmp_path, templates):
    from terminal.face.store import all_templates
    from terminal.punch import roster

    TemplateStore(tmp_path).save({"emp-bill": templates["emp-bill"]})
    boris = [[float(v) for v in t] for t in templates["emp-boris"]]
    roster.install(tmp_path, version=1, employees=[
        {"id": "emp-boris", "name": "Boris", "uid": 7, "pin_allowed": False, "face_templates": boris},
        {"id": "emp-nobio", "name": "No Face", "uid": 8, "pin_allowed": True, "face_templates": []}])
    merged = all_templates(tmp_path)
    assert sorted(merged) == ["emp-bill", "emp-boris"]
    probe = stills.analyse(stills.read_image(lfw("Boris_Becker", 3)), detect.HogDetector())[0].embedding
    assert gallery.Gallery(merged).identify(probe[None, :], gallery.Rule())[0].employee == "emp-boris"


def test_embedding_worker_killed_does_not_stop_identification(hog):
    import signal
    import time

    from terminal.face import embed

    found = stills.analyse(stills.read_image(lfw("Bill_Clinton", 3)), hog, embed=False)[0]
    expected = embed.embed_chip(found.chip)
    pool = embed.EmbeddingPool(2)
    try:
        assert np.allclose(pool.embed(found.chip), expected, atol=1e-5)
        os.kill(next(iter(pool._executor._processes)), signal.SIGKILL)  # kill -9 one worker
        time.sleep(0.5)
        results = []
        for _ in range(3):  # the frame in flight may be lost; the following ones are embedded
            try:
                results.append(pool.embed(found.chip))
            except Exception as e:
                results.append(e)
        assert np.allclose(results[-1], expected, atol=1e-5)
        assert pool.workers == 1
    finally:
        pool.close()


def test_scan_reads_a_video_file(terminal, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    for i in range(4):
        writer.write(background(i))
    for i in range(12):
        writer.write(frame_with(lfw("Amelie_Mauresmo", 4), i))
    writer.release()
    result = presensi("scan", "--camera", str(path), "--json", config=terminal, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [(d["employee"], d["accepted"]) for d in json_lines(result.stdout)] == [("emp-amelie", True)]


def test_two_people_in_view_get_one_decision_each(hog, templates):
    def two(i):
        left = frame_with(lfw("Bill_Clinton", 3), i, scale=1.2, size=(480, 320))
        right = frame_with(lfw("Boris_Becker", 4), i + 1, scale=1.2, size=(480, 320))
        return np.hstack([left, right])

    pl = make_pipeline(hog, templates)
    t, decisions = 0.0, []
    for i in range(20):
        t += 1 / 15
        decisions += pl.process(two(i), t, wait=True)
    assert sorted((d.employee, d.accepted) for d in decisions) == [("emp-bill", True), ("emp-boris", True)]
