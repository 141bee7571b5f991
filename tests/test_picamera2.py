"""The Pi camera module through Picamera2 (drivers/camera/picamera2.py) and the camera source selection
(`[camera] source = "picamera2"`, `"auto"`), against the project's emulation of the picamera2 library
(drivers/camera/fakes/picamera2, put on sys.path as Raspberry Pi OS's python3-picamera2 would be).

Frames are real photos from ../shared/data; what is asserted is what the terminal gets: a BGR frame of the
configured size in which the face is found, the exposure settings libcamera reports back in its frame
metadata, and a camera fault with what to do when the library, the camera or its frames are missing —
never frames from another camera. What only a real Pi proves is listed in docs/install-pi.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import REPO, presensi, readline, write_config
from face_support import lfw, needs_shared, write_sequence

from drivers import camera as cam
from drivers.camera import detect, picamera2
from drivers.camera.fakes import FAKES_DIR
from terminal import config
from terminal.face.detect import HogDetector


@pytest.fixture
def fake():
    """The emulated picamera2 library importable as `picamera2`, with nothing plugged in."""
    sys.path.insert(0, str(FAKES_DIR))
    sys.modules.pop("picamera2", None)
    import picamera2 as library

    library.reset()
    yield library
    library.reset()
    sys.path.remove(str(FAKES_DIR))
    sys.modules.pop("picamera2", None)


@pytest.fixture
def scene(tmp_path):
    """A folder of camera frames with a real face (LFW) in them."""
    return write_sequence(tmp_path / "scene", [(lfw("Aaron_Peirsol", 1), 4)])


class Faults:
    def __init__(self):
        self.seen, self.recovered, self.lock = [], [], threading.Lock()

    def fault(self, f):
        with self.lock:
            self.seen.append((f.kind, f.message))

    def recover(self, kind):
        with self.lock:
            self.recovered.append(kind)

    def messages(self):
        with self.lock:
            return [m for _, m in self.seen]


def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def grabber(source, faults=None):
    faults = faults or Faults()
    settings = cam.CameraSettings(stall_seconds=30, reconnect_min=0.05, reconnect_max=0.2)
    return cam.Camera(source, settings, on_fault=faults.fault, on_recover=faults.recover), faults


def first_frame(camera, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = camera.latest(timeout=0.5)
        if frame is not None:
            return frame
    return None


def camera_options(**keys) -> dict:
    return config.SECTIONS["camera"](**keys).source_options()


@needs_shared
def test_a_face_in_front_of_the_pi_camera_arrives_as_a_bgr_frame_the_detector_finds(fake, scene):
    fake.attach(scene)
    with grabber(cam.open_source("picamera2", 640, 480, 15.0))[0] as camera:
        frame = first_frame(camera)
    assert frame is not None
    assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
    written = cv2.imread(str(sorted(scene.iterdir())[0]))
    # the same picture in the same channel order (a red/blue swap would differ by far more)
    assert float(np.abs(frame.image.astype(int) - written.astype(int)).mean()) < 1.0
    assert len(HogDetector().detect(frame.image)) == 1


@needs_shared
def test_every_stream_format_of_picamera2_converts_to_the_same_bgr_picture(fake, scene):
    fake.attach(scene)
    library = __import__("picamera2")
    pictures = {}
    for fmt in fake.FORMATS:
        fake.reset()
        fake.attach(scene)
        with library.Picamera2(0) as device:
            device.configure(device.create_preview_configuration(main={"size": (320, 240), "format": fmt}))
            device.start()
            array = device.capture_array("main")
            assert array.shape[2] == (4 if fmt.startswith("X") else 3)
            pictures[fmt] = picamera2.to_bgr(array, fmt)
    reference = pictures["RGB888"]
    for fmt, image in pictures.items():
        assert image.shape == (240, 320, 3) and np.array_equal(image, reference), fmt


def test_the_dim_corridor_settings_reach_libcamera(fake):
    fake.attach()
    fixed = camera_options(exposure=30000, analogue_gain=6.0, awb_mode="indoor")
    source = cam.open_source("picamera2", 320, 240, 10.0, options=fixed)
    source.open()
    try:
        source.read()
        seen = source.metadata()
    finally:
        source.close()
    assert seen["AeEnable"] is False and seen["ExposureTime"] == 30000 and seen["AnalogueGain"] == 6.0
    assert seen["AwbMode"] == picamera2.AWB_MODES["indoor"] == 4

    automatic = cam.open_source("picamera2", 320, 240, 10.0, options=camera_options(exposure_mode="long"))
    automatic.open()
    try:
        automatic.read()
        seen = automatic.metadata()
    finally:
        automatic.close()
    assert seen["AeEnable"] is True and seen["AeExposureMode"] == 2 and "AnalogueGain" not in automatic.controls


@pytest.mark.parametrize("text, expected", [
    ("exposure = 50", '[camera] exposure = 50: must be "auto" or an exposure time in microseconds'),
    ("exposure = \"dark\"", '[camera] exposure = "dark": must be "auto" or an exposure time'),
    ("analogue_gain = 0.5", "0 (automatic) or from 1 to 16"),
    ("analogue_gain = 40.0", "[camera] analogue_gain"),
    ("awb_mode = \"sunny\"", "'indoor'"),
    ("exposure_mode = \"longest\"", "'long'"),
])
def test_bad_camera_settings_are_refused_with_the_key_and_the_fix(tmp_path, text, expected):
    path = tmp_path / "p.toml"
    path.write_text(f'[device]\nid = "opd-01"\n[paths]\nstate_dir = "/tmp/x"\n[camera]\n{text}\n')
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    assert len(err.value.lines) == 1, err.value.lines  # one problem, one line


def test_without_the_picamera2_library_the_camera_is_a_fault_that_says_what_to_install():
    sys.modules.pop("picamera2", None)
    with pytest.raises(ModuleNotFoundError):
        __import__("picamera2")  # this virtual environment has no python3-picamera2
    with grabber(cam.open_source("picamera2"))[0] as camera:
        assert wait_for(lambda: camera.faults())
        assert camera.latest(timeout=0.3) is None  # no frames from anywhere else
        assert camera.faults()[0].kind == "disconnected"
        assert "python3-picamera2" in camera.faults()[0].message
        assert "--system-site-packages" in camera.faults()[0].message


@needs_shared
def test_a_missing_camera_is_a_fault_that_clears_when_it_is_plugged_in(fake, scene):
    camera, faults = grabber(cam.open_source("picamera2"))
    with camera:
        assert wait_for(lambda: faults.seen)
        assert "no Pi camera 0 found by libcamera" in faults.messages()[0]
        assert "ribbon cable" in faults.messages()[0]
        fake.attach(scene)  # plugged in: frames flow without a restart
        assert first_frame(camera) is not None
        assert wait_for(lambda: "disconnected" in faults.recovered)


@needs_shared
def test_a_camera_that_stops_delivering_is_a_fault_and_recovers(fake, scene):
    fake.attach(scene)
    camera, faults = grabber(cam.open_source("picamera2"))
    with camera:
        assert first_frame(camera) is not None
        fake.stall(0)  # a loose ribbon cable: requests stop completing
        assert wait_for(lambda: any("delivered no frame" in m for m in faults.messages()))
        fake.stall(0, False)
        assert wait_for(lambda: "disconnected" in faults.recovered)
        seq = camera.latest().seq
        assert camera.latest(after_seq=seq, timeout=10.0) is not None


def test_a_busy_or_broken_camera_is_a_fault_naming_the_cause(fake):
    fake.attach(broken=True)
    with pytest.raises(cam.SourceError, match="the Pi camera cannot be opened .*Camera __init__ sequence"):
        cam.open_source("picamera2").open()
    fake.reset()
    fake.attach()
    first = cam.open_source("picamera2")
    first.open()
    try:
        with pytest.raises(cam.SourceError, match="is another program using it"):
            cam.open_source("picamera2").open()
    finally:
        first.close()
    second = cam.open_source("picamera2")
    second.open()  # closed properly: the camera can be opened again
    second.close()


def test_source_spellings_select_the_pi_camera_and_auto_detection():
    assert cam.open_source("picamera2").kind == "picamera2"
    assert cam.open_source("picamera2:1").number == 1
    assert cam.open_source("0", kind="picamera2").kind == "picamera2"  # a named kind wins over the spelling
    assert cam.open_source("auto").kind == "detect"
    assert cam.open_source("0").kind == "opencv" and cam.open_source("/dev/video0").kind == "opencv"
    with pytest.raises(cam.SourceError, match="picamera2 or picamera2:N"):
        cam.open_source("picamera2:front")


def test_auto_detection_prefers_the_pi_camera_then_a_webcam_and_refuses_nothing_found():
    assert detect.choose(True, ["/dev/video0"]) == "picamera2"
    assert detect.choose(False, ["/dev/presensi-camera", "/dev/video0"]) == "/dev/presensi-camera"
    with pytest.raises(cam.SourceError, match="no camera found"):
        detect.choose(False, [])


@needs_shared
def test_auto_uses_the_attached_pi_camera_and_stays_with_it_when_it_fails(fake, scene):
    fake.attach(scene)
    camera, faults = grabber(cam.open_source("auto"))
    with camera:
        assert first_frame(camera) is not None
        assert camera.source.chosen.kind == "picamera2"
        fake.detach(0)  # the camera dies: a fault about the Pi camera, never frames from another camera
        assert wait_for(lambda: faults.seen)
        assert all("Pi camera" in m for m in faults.messages()), faults.messages()
        fake.attach(scene)  # repaired: the same camera again, no restart
        assert wait_for(lambda: "disconnected" in faults.recovered)
        assert camera.source.chosen.kind == "picamera2"


def test_auto_without_a_pi_camera_takes_a_webcam_or_is_a_fault(fake):
    webcams = detect.v4l2_devices()
    with grabber(cam.open_source("auto"))[0] as camera:
        assert wait_for(lambda: camera.faults() or camera.source.chosen is not None)
        if webcams:  # a machine with a V4L2 device: that one, through OpenCV
            assert camera.source.chosen.kind == "opencv" and camera.source.chosen.spec == webcams[0]
        else:  # CI: nothing at all, and the fault says what to check
            assert wait_for(lambda: camera.faults())
            assert "no camera found" in camera.faults()[0].message
            assert camera.source.chosen is None


def test_a_usb_webcam_that_libcamera_lists_is_not_taken_for_the_pi_camera(fake):
    fake.attach(usb=True)
    assert picamera2.csi_cameras(__import__("picamera2")) == []
    assert detect.csi_present() is False


@needs_shared
def test_presensi_scan_on_the_pi_camera_decides_and_records_the_face(tmp_path):
    """The whole path in a separate process, as on a Pi: `presensi scan --camera picamera2` with the library
    on the path where Raspberry Pi OS puts python3-picamera2, and a camera showing an enrolled employee."""
    cfg = write_config(tmp_path / "presensi.toml", tmp_path / "state",
                       '\n[camera]\nexposure_mode = "long"\nawb_mode = "indoor"\n'
                       '\n[face]\nworkers = 1\n\n[liveness]\nmode = "off"\n')
    assert presensi("init", config=cfg).returncode == 0
    photos = tmp_path / "photos"
    for employee, identity in (("emp-aaron", "Aaron_Peirsol"), ("emp-bill", "Bill_Clinton")):
        (photos / employee).mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(lfw(identity, n), photos / employee / f"{n}.jpg")
    assert presensi("enroll-photos", str(photos), config=cfg).returncode == 0
    scene = write_sequence(tmp_path / "scene", [(None, 4), (lfw("Aaron_Peirsol", 3), 12)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKES_DIR), os.environ.get("PYTHONPATH", "")]),
           "FAKE_PICAMERA2_FRAMES": str(scene)}
    proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "-c", str(cfg), "scan", "--camera",
                             "picamera2", "--json", "--record", "--seconds", "120"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        decision = json.loads(readline(proc.stdout, timeout=90))
    finally:
        proc.terminate()
        proc.wait(30)
    assert decision["employee"] == "emp-aaron" and decision["accepted"] is True
    assert decision["punch"]["recorded"] is True
    log = json.loads(presensi("log", "list", "--json", config=cfg).stdout.splitlines()[0])
    assert [(r["employee"], r["method"]) for r in log] == [("emp-aaron", "face")]


def test_auto_detection_takes_a_webcam_s_capture_node_not_the_pi_s_codec_or_isp_nodes(tmp_path):
    """The V4L2 nodes of a Pi 4 with a USB webcam, as sysfs shows them: the codec and ISP nodes
    (bcm2835-codec, bcm2835-isp) and the webcam's metadata node are no camera."""
    sysfs, dev, drivers = tmp_path / "video4linux", tmp_path / "dev", tmp_path / "drivers"
    dev.mkdir()
    for name, driver, index in (("video10", "bcm2835-codec", "0"), ("video13", "bcm2835-isp", "0"),
                                ("video2", "uvcvideo", "1"), ("video1", "uvcvideo", "0")):
        (drivers / driver).mkdir(parents=True, exist_ok=True)
        node = sysfs / name
        (node / "device").mkdir(parents=True)
        (node / "device" / "driver").symlink_to(drivers / driver)
        (node / "index").write_text(index + "\n")
    assert detect.v4l2_devices(str(sysfs), str(dev)) == [str(dev / "video1")]
    (dev / "presensi-camera").touch()  # the udev rule's name comes first
    assert detect.v4l2_devices(str(sysfs), str(dev))[0] == str(dev / "presensi-camera")
    assert detect.v4l2_devices(str(tmp_path / "none"), str(tmp_path / "none")) == []
