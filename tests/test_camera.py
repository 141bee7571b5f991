"""drivers/camera/: the source registry, file sources, the threaded latest-frame grabber, fault reports and
reconnection.

Real OpenCV decoding of real files; the 'device' that vanishes is a frame folder that is removed and
re-created (no V4L2 device exists in CI)."""

from __future__ import annotations

import inspect
import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from drivers import camera as cam


def noisy(i: int, level: int = 120) -> np.ndarray:
    rng = np.random.default_rng(i)
    return np.clip(rng.normal(level, 20, (120, 160, 3)), 0, 255).astype(np.uint8)


def write_frames(folder, start: int, count: int, level: int = 120) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(start, start + count):
        cv2.imwrite(str(folder / f"frame{i:05d}.png"), noisy(i, level))


class Recorder:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def fault(self, f):
        with self.lock:
            self.events.append(("fault", f.kind, f.message))

    def recover(self, kind):
        with self.lock:
            self.events.append(("recovered", kind, ""))

    def kinds(self, what):
        with self.lock:
            return [k for w, k, _ in self.events if w == what]


def wait_for(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def make(source, rec, **kw):
    settings = cam.CameraSettings(**{"fps": 50.0, "reconnect_min": 0.05, "reconnect_max": 0.2, **kw})
    return cam.Camera(source, settings, on_fault=rec.fault, on_recover=rec.recover)


def drain(camera, until_seq, timeout=15.0):
    seq, deadline = 0, time.monotonic() + timeout
    while seq < until_seq and time.monotonic() < deadline:
        f = camera.latest(after_seq=seq, timeout=0.5)
        if f is not None:
            seq = f.seq
    return seq


def test_open_source_picks_the_right_kind(tmp_path):
    write_frames(tmp_path / "f", 0, 1)
    video = tmp_path / "v.avi"
    video.write_bytes(b"")
    assert cam.open_source("0").kind == "opencv"
    assert cam.open_source("/dev/video7").kind == "opencv"
    assert cam.open_source("libcamerasrc ! videoconvert ! appsink").kind == "gstreamer"
    assert cam.open_source(str(tmp_path / "f")).kind == "folder"
    assert cam.open_source(str(video)).kind == "video"
    assert cam.open_source(str(tmp_path / "later.mp4")).kind == "video"  # by its suffix, before it exists
    with pytest.raises(cam.SourceError, match="not .*a camera index or /dev/videoN"):
        cam.open_source(str(tmp_path / "nothing-here"))


def test_a_named_kind_skips_the_guess_and_an_unknown_kind_names_the_valid_ones(tmp_path):
    folder = tmp_path / "not-yet"
    with pytest.raises(cam.SourceError, match="not .*a camera index or /dev/videoN"):
        cam.open_source(str(folder))  # auto: nothing on disk says what it is
    rec = Recorder()
    with make(cam.open_source(str(folder), kind="folder"), rec, stall_seconds=30) as camera:
        assert wait_for(lambda: "disconnected" in rec.kinds("fault"))
        assert "frame folder not found" in camera.faults()[0].message
        write_frames(folder, 0, 2)  # the folder appears: frames flow and the fault clears
        assert drain(camera, 2) == 2
        assert wait_for(lambda: "disconnected" in rec.kinds("recovered"))
    with pytest.raises(cam.SourceError) as e:
        cam.open_source("0", kind="picamera9")
    assert "[camera] kind = 'picamera9'" in str(e.value)
    assert all(name in str(e.value) for name in ["auto", *cam.KINDS]), str(e.value)


def test_every_registered_kind_implements_the_source_interface():
    for name, cls in cam.KINDS.items():
        assert issubclass(cls, cam.Source) and cls.kind == name
        assert not inspect.isabstract(cls), f"{name}: {cls.__abstractmethods__} not implemented"


def test_folder_source_ends_reports_fault_and_resumes_when_frames_return(tmp_path):
    folder = tmp_path / "frames"
    write_frames(folder, 0, 5)
    rec = Recorder()
    camera = make(cam.open_source(str(folder), kind="folder"), rec, stall_seconds=30)
    with camera:
        assert drain(camera, 5) == 5
        assert wait_for(lambda: "ended" in rec.kinds("fault"))
        assert [f.kind for f in camera.faults()] == ["ended"]
        assert not camera.health()["ok"]
        write_frames(folder, 5, 3)  # frames return
        assert drain(camera, 8) == 8
        assert wait_for(lambda: "ended" in rec.kinds("recovered"))
        # ... and the folder running dry again is reported again
        assert wait_for(lambda: rec.kinds("fault").count("ended") >= 2)


def test_vanished_device_is_reported_and_reconnects_by_itself(tmp_path):
    folder = tmp_path / "dev"
    write_frames(folder, 0, 3)
    rec = Recorder()
    camera = make(cam.open_source(str(folder), kind="folder"), rec, stall_seconds=30)
    with camera:
        assert drain(camera, 3) == 3
        shutil.rmtree(folder)  # the device goes away
        assert wait_for(lambda: "disconnected" in rec.kinds("fault"))
        message = [m for w, k, m in rec.events if k == "disconnected"][0]
        assert "disappeared" in message or "not found" in message
        write_frames(folder, 10, 4)  # plugged back in
        assert drain(camera, 7) >= 7
        assert wait_for(lambda: "disconnected" in rec.kinds("recovered"))
        assert camera.running


def test_missing_device_path_reports_fault_and_keeps_trying(tmp_path):
    rec = Recorder()
    camera = make(cam.open_source("/dev/video-presensi-test-none", kind="opencv"), rec, stall_seconds=30)
    with camera:
        assert wait_for(lambda: "disconnected" in rec.kinds("fault"))
        assert "no such camera device" in camera.faults()[0].message
        assert camera.latest(timeout=0.2) is None
        assert camera.running  # still retrying, not crashed


def test_no_frames_for_n_seconds_is_a_stall(tmp_path):
    folder = tmp_path / "frames"
    write_frames(folder, 0, 2)
    rec = Recorder()
    camera = make(cam.open_source(str(folder), kind="folder"), rec, stall_seconds=0.5)
    with camera:
        assert wait_for(lambda: "stalled" in rec.kinds("fault"), timeout=15)
        write_frames(folder, 2, 2)
        assert wait_for(lambda: "stalled" in rec.kinds("recovered"), timeout=15)


def test_black_and_frozen_frames_are_faults(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(30):
        cv2.imwrite(str(folder / f"a{i:03d}.png"), np.zeros((60, 80, 3), np.uint8))
    frozen = noisy(1)
    for i in range(30):
        cv2.imwrite(str(folder / f"b{i:03d}.png"), frozen)
    for i in range(5):
        cv2.imwrite(str(folder / f"c{i:03d}.png"), noisy(100 + i))
    rec = Recorder()
    camera = make(cam.open_source(str(folder), kind="folder"), rec, stall_seconds=30, black_seconds=0.2,
                  frozen_seconds=0.2)
    with camera:
        assert drain(camera, 65) == 65
        assert wait_for(lambda: {"black", "frozen"} <= set(rec.kinds("recovered")))
    assert {"black", "frozen"} <= set(rec.kinds("fault"))


def test_video_file_replays_at_the_set_rate_and_stops_at_end(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(12):
        writer.write(noisy(i))
    writer.release()
    rec = Recorder()
    camera = make(cam.open_source(str(path), kind="video"), rec, fps=20.0, stop_at_end=True, stall_seconds=30)
    t0 = time.monotonic()
    with camera:
        last = drain(camera, 12)
        assert wait_for(lambda: camera.ended)
    assert last == 12
    assert time.monotonic() - t0 >= 11 / 20 * 0.9  # paced, not as fast as decoding allows
    assert "ended" in rec.kinds("fault")


def test_damaged_video_file_is_a_clear_fault(tmp_path):
    path = tmp_path / "broken.avi"
    path.write_bytes(b"RIFF\x00\x00garbage" * 10)
    rec = Recorder()
    with make(cam.open_source(str(path), kind="video"), rec, stall_seconds=30, stop_at_end=True) as camera:
        assert wait_for(lambda: rec.kinds("fault"))
        assert camera.latest(timeout=0.1) is None
    assert rec.kinds("fault")[0] in ("disconnected", "ended")


def test_latest_never_blocks_longer_than_asked(tmp_path):
    folder = tmp_path / "frames"
    write_frames(folder, 0, 1)
    with make(cam.open_source(str(folder), kind="folder"), Recorder(), stall_seconds=30) as camera:
        assert drain(camera, 1) == 1
        t0 = time.monotonic()
        assert camera.latest(after_seq=1, timeout=0.3) is None
        assert time.monotonic() - t0 < 1.0
