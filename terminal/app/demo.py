"""`presensi demo`: the whole terminal on one machine, with no hardware and no files outside the package.

The parts are the real ones: the reference central server (sync/server) on 127.0.0.1, a roster it signs
and the terminal pulls, the daemon (`terminal.app.daemon.Daemon`) with its camera reading a folder of frames,
the fingerprint emulator on a pty driven by the unmodified pyfingerprint, the punch service for an operator
PIN punch, and the push job delivering everything. The sample face is the public-domain NASA portrait of
astronaut Eileen Collins that scikit-image bundles (the `demo` extra), so nothing outside the installed
packages is needed.
"""

from __future__ import annotations

import importlib.util
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

EMPLOYEES = [  # (NIP, name, how this employee punches in the demo)
    ("198501012010012001", "Sri Wahyuni", "face"),
    ("199002022015021002", "Andi Pratama", "finger"),
    ("198803032012031003", "Dewi Lestari", "pin"),
]


class DemoError(Exception):
    """The demo cannot run here; the message says what is missing."""


def sample_photo() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DemoError("the demo's sample face comes with scikit-image: pip install -e '.[demo]' "
                        "(or run bash scripts/demo.sh)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"
    if not path.exists():
        raise DemoError(f"{path}: scikit-image's sample portrait is missing; reinstall scikit-image")
    return path


def _scene(photo: Path) -> tuple[np.ndarray, np.ndarray]:
    """The empty office and the employee's head and shoulders (face about 110 px) to place in it."""
    portrait = cv2.imread(str(photo))
    face = cv2.resize(portrait[0:300, 100:380], (336, 360))
    background = np.full((480, 640, 3), (170, 180, 175), np.uint8)
    cv2.rectangle(background, (0, 380), (640, 480), (120, 110, 100), -1)
    return background, face


def _in_view(background: np.ndarray, face: np.ndarray, i: int) -> np.ndarray:
    frame = background.copy()
    x = 152 + int(6 * np.sin(i / 3))  # small natural movement
    frame[60:420, x:x + 336] = face
    return frame


def _write_frame(folder: Path, n: int, image: np.ndarray) -> None:
    # Under a name the camera ignores, then renamed: a slow machine's camera would otherwise read a
    # half-written JPEG ("Premature end of JPEG file") and see half a face.
    ok, data = cv2.imencode(".jpg", image)
    if not ok:
        raise DemoError("OpenCV cannot encode JPEG frames")
    part = folder / f"{n:05d}.part"
    part.write_bytes(data.tobytes())
    part.replace(folder / f"{n:05d}.jpg")


def make_frames(photo: Path, folder: Path, fps: float, empty_s: float = 1.0, face_s: float = 6.0) -> int:
    """A camera's view: an empty office, then the employee stepping up and standing in front of it."""
    folder.mkdir(parents=True, exist_ok=True)
    background, face = _scene(photo)
    n = 0
    for _ in range(int(empty_s * fps)):
        _write_frame(folder, n, background)
        n += 1
    for i in range(int(face_s * fps)):
        _write_frame(folder, n, _in_view(background, face, i))
        n += 1
    return n


def stand_in_view(photo: Path, folder: Path, fps: float, leave: threading.Event, empty_s: float = 1.0) -> None:
    """The employee steps up and stands in front of the camera until `leave` is set, as a person waits for
    the terminal's answer: on a slow machine (a Pi under load, arm64 emulation in CI) that takes longer
    than the few seconds `make_frames` records."""
    folder.mkdir(parents=True, exist_ok=True)
    background, face = _scene(photo)
    n = 0
    for _ in range(int(empty_s * fps)):
        _write_frame(folder, n, background)
        n += 1
    while not leave.is_set():
        _write_frame(folder, n, _in_view(background, face, n))
        n += 1
        leave.wait(1 / fps)


def face_template(photo: Path) -> list[float]:
    from terminal.config import Face
    from terminal.face import detect, enrol, quality

    cfg = Face()
    result = enrol.assess_photo(photo, "demo", detect.from_config(cfg), quality.QualityLimits.from_config(cfg))
    if result.embedding is None:
        raise DemoError(f"{photo}: the sample face was not accepted ({result.message})")
    return [float(x) for x in result.embedding]


@dataclass
class CentralServer:
    """The reference central server in a background thread (uvicorn on 127.0.0.1, any free port)."""

    db: Path
    url: str = ""
    _server: object = field(default=None, repr=False)

    def start(self) -> CentralServer:
        from sync.asgi import Served
        from sync.server.app import make_app

        self.app = make_app(str(self.db))
        self._server = Served(self.app, "127.0.0.1", 0, name="demo-central")
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def publish_roster(store, photo: Path, version: int = 1) -> None:
    """Sign and publish the demo roster on a reference server's store (what `server publish-roster` does)."""
    from drivers.fingerprint.emulator.sensorsim import synthetic_template
    from sync.wire.rosterbundle import build_bundle

    employees = []
    for uid, (nip, name, method) in enumerate(EMPLOYEES, start=1):
        employees.append({
            "id": nip, "name": name, "uid": uid, "pin_allowed": method == "pin",
            "face_templates": [face_template(photo)] if method == "face" else [],
            "finger_templates": [synthetic_template(f"demo:{nip}")] if method == "finger" else [],
        })
    store.publish_roster(version, build_bundle(store.server_key(), version, employees, None, None))


def write_config(work: Path, server: CentralServer, token: str, server_key: str, frames: Path,
                 finger_port: str, fps: float, decision_timeout: float = 6.0) -> Path:
    path = work / "presensi.toml"
    path.write_text(f"""# written by `presensi demo`
[device]
id = "demo-opd-01"
name = "Demo OPD"

[paths]
state_dir = "{work / 'state'}"

[central]
url = "{server.url}"
token = "{token}"
server_key = "{server_key}"
push_interval = 2.0

[web]
listen = "127.0.0.1:0"

[camera]
source = "{frames}"
fps = {fps}

[face]
decision_timeout = {decision_timeout}

[liveness]
# The demo's camera replays a still photo: with liveness on, the terminal would (rightly) refuse it.
mode = "off"

[fingerprint]
enabled = true
port = "{finger_port}"
""")
    return path


def run(say: Callable[[str], None] = print, work: Path | None = None, linger: float = 0.0,
        timeout: float = 60.0) -> dict:
    """Run the demo; returns a summary dict. Raises DemoError when a step does not happen in time."""
    from drivers.fingerprint.emulator import REALISTIC_LATENCY, FingerprintEmulator
    from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
    from sync.device.roster_client import pull_roster
    from sync.server.app import add_device
    from terminal import config as config_mod
    from terminal import identity
    from terminal.app.daemon import Daemon
    from terminal.log import punchlog

    work = Path(work or tempfile.mkdtemp(prefix="presensi-demo-"))
    photo = sample_photo()
    fps = 10.0
    frames = work / "camera"
    frames.mkdir(parents=True, exist_ok=True)  # an empty view until the employee steps up
    central = CentralServer(work / "central.db").start()
    say(f"central server   {central.url}  (reference server, database {central.db})")
    punchlog.init(work / "state")  # the device key first: registration binds it (a token alone is not enough)
    device_key = identity.public_key_b64(identity.load_key(work / "state"))
    registration = add_device(central.app.store, "demo-opd-01", device_key)
    say(f"device key       {registration['public_key_fingerprint']} bound to demo-opd-01")
    publish_roster(central.app.store, photo)
    say(f"roster           version 1 published: {', '.join(n for _, n, _ in EMPLOYEES)}")
    with FingerprintEmulator(Settings(capacity=162), link=work / "ttyFP", latency=REALISTIC_LATENCY) as emu:
        say(f"fingerprint      emulated ZhianTec sensor on {emu.path}")
        cfg = config_mod.load(write_config(work, central, registration["token"], registration["server_key"],
                                           frames, emu.path, fps, _decision_timeout(timeout)))
        punchlog.init(cfg.state_dir)
        installed = pull_roster(cfg)
        say(f"terminal         {cfg.path}; roster {installed['status']} (version {installed['version']})")
        daemon = Daemon(cfg)
        # A slow machine's worker may need longer than the native 20 s to load its models or to analyse a
        # frame; restarting it then would only start that wait again.
        daemon.worker_silence = max(daemon.worker_silence, timeout / 3)
        thread = threading.Thread(target=daemon.run, name="demo-daemon", daemon=True)
        thread.start()
        try:
            return _script(daemon, cfg, central, emu, photo, frames, fps, synthetic_template, say, linger,
                           timeout)
        finally:
            daemon.stop_event.set()
            thread.join(15)
            central.stop()


def _script(daemon, cfg, central, emu, photo, frames, fps, synthetic_template, say, linger, timeout) -> dict:
    from terminal.log import punchlog

    _wait(lambda: daemon.web_port is not None and "fingerprint" in daemon.workers, timeout, "the daemon to start")
    say(f"kiosk            http://127.0.0.1:{daemon.web_port}/")
    leave = threading.Event()
    visitor = threading.Thread(target=stand_in_view, args=(photo, frames, fps, leave), name="demo-visitor",
                               daemon=True)
    visitor.start()  # the employee steps in front of the camera now
    try:
        face = _wait_punch(cfg, "face", timeout)
    finally:
        leave.set()
        visitor.join(timeout)
    say(f"face punch       seq {face['seq']}  {_name(face)}  {punchlog.kind_of(face)}  distance "
        f"{face['details'].get('distance', '?')}")
    _wait(lambda: daemon.workers["fingerprint"].slots.rows(), timeout, "the fingerprint slots to be synced")
    emu.place_finger(synthetic_template(f"demo:{EMPLOYEES[1][0]}"), score=140)
    finger = _wait_punch(cfg, "finger", timeout)
    emu.remove_finger()
    say(f"finger punch     seq {finger['seq']}  {_name(finger)}  {punchlog.kind_of(finger)}  score "
        f"{finger['details'].get('score')}")
    outcome = daemon.punches.punch(EMPLOYEES[2][0], "pin", details={"operator": "demo"})
    say(f"PIN punch        seq {outcome.record['seq']}  {outcome.name}  {outcome.message}")
    _wait(lambda: central.app.store.punch_count() >= 3, timeout, "the central server to receive the punches")
    with punchlog.PunchLog(cfg.state_dir) as plog:
        problems = plog.verify()
        head = plog.head()
    say(f"central server   received {central.app.store.punch_count()} punches, "
        f"{len(central.app.store.alarms())} alarms; see {central.url}/")
    say(f"log verify       {'ok' if not problems else problems[0]}  ({head[0]} punches, head {head[1][:16]})")
    if linger:
        say(f"the kiosk stays up for {linger:.0f} s: http://127.0.0.1:{daemon.web_port}/")
        time.sleep(linger)
    return {"punches": head[0], "delivered": central.app.store.punch_count(), "verified": not problems,
            "kiosk": f"http://127.0.0.1:{daemon.web_port}/", "central": central.url}


def _decision_timeout(timeout: float) -> float:
    """How long the face may take to be agreed on: the native 6 s unless the demo was given more time. Under
    arm64 emulation one frame takes seconds, and three must agree before the face's time is up."""
    return max(6.0, timeout / 10)


def _name(record: dict) -> str:
    return next((n for nip, n, _ in EMPLOYEES if nip == record["employee"]), record["employee"])


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def _wait_punch(cfg, method: str, timeout: float) -> dict:
    from terminal.log import punchlog

    def found():
        with punchlog.PunchLog(cfg.state_dir) as plog:
            return next((r for r in plog.records() if r["method"] == method), None)
    return _wait(found, timeout, f"a {method} punch")
