"""The terminal's configuration: one TOML file, validated completely before any command runs.

Why pydantic models and not a hand-written walker: the walker let `threshold = nan` through (every range
check is false for NaN), and a NaN face threshold made `presensi identify` accept a stranger. Each section is
a frozen pydantic model below with ``extra="forbid"`` (a misspelt key is an error, not a silently ignored
line), ``allow_inf_nan=False`` (NaN and infinities refused everywhere) and ``strict=True`` (TOML values are
typed, so "1" is not quietly turned into 1; a whole number where a number is expected is fine). Every field
documents itself in ``Field(description=...)``; ``config/presensi.example.toml`` documents the same keys
with the same defaults, and tests/test_config.py keeps the two in step.

Every error is one line naming the file, the key (``[section] key``) and what to write instead; all errors
of a file are reported at once. ``presensi config check`` (terminal/cli/config.py) prints them, or the
effective configuration with the secrets redacted.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
import urllib.parse
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PATH = "/etc/presensi/presensi.toml"
TIMEZONES = ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura")
REDACTED = "<redacted>"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message says how to fix it.

    ``lines`` holds one line per problem (a file may have several); the message is those lines joined."""

    def __init__(self, message: str | list[str]):
        self.lines = [message] if isinstance(message, str) else list(message)
        super().__init__("\n".join(self.lines))


def _f(default, doc, *, min=None, max=None, secret: bool = False, example=None):
    """A documented field; min/max are inclusive bounds. Mutable defaults get a fresh copy per instance."""
    extra = {"secret": True} if secret else None
    examples = None if example is None else [example]
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda: type(default)(default), description=doc, ge=min, le=max,
                     json_schema_extra=extra, examples=examples)
    return Field(default, description=doc, ge=min, le=max, json_schema_extra=extra, examples=examples)


# -- value checks shared by several sections (they raise ValueError; the message is the fix) --------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_listen(value: str, example: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit():
        raise ValueError(f"write HOST:PORT, e.g. {example} (an IPv6 host in brackets: [::1]:{example.split(':')[-1]})")
    if int(port) > 65535:
        raise ValueError(f"port {port} is out of range; use a port from 1 to 65535 (0 = any free port)")
    return value


def _check_url(value: str | None, example: str) -> str | None:
    if value is None:
        return None
    fix = f"write an http:// or https:// URL with a host, e.g. {example}"
    if _CONTROL.search(value) or " " in value:
        raise ValueError(f"contains spaces or control characters; {fix}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the scheme must be http or https, not {parts.scheme or 'missing'!r}; {fix}")
    try:
        port = parts.port  # raises ValueError for a port that is not a number 0-65535
    except ValueError:
        port = 0
    if port == 0 and parts.netloc.rpartition("]")[2].count(":"):  # "host:0" or "host:x" (not "[::1]" alone)
        raise ValueError(f"the port is not a number from 1 to 65535; {fix}")
    if not parts.hostname:
        raise ValueError(f"the URL has no host; {fix}")
    return value


def _check_id(value: str, *, empty_ok: bool) -> str:
    """Ids end up in file names, HTTP paths and protocol fields: no control characters or separators."""
    if not value.strip():
        if empty_ok:
            return value
        raise ValueError("must not be empty; write the id registered on the central server, e.g. 'opd-dinkes-01'")
    if _CONTROL.search(value):
        raise ValueError("contains a control character (NUL, tab, newline, ...); use letters, digits, '-' or '_'")
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must not contain '/' or '\\' or be '.' or '..'; use letters, digits, '-' or '_'")
    return value


class Section(BaseModel):
    """One [section] of the file. Building one from bad values raises ConfigError (one line per problem,
    without the file name, which only the loader knows)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    def __init__(self, /, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError([_describe(type(self), err) for err in e.errors()]) from None

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value):
        # A NUL byte in a path or name would surface later as a traceback from the operating system.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("contains a NUL character; remove it")
        return value


class Device(Section):
    id: str = Field(description="Device id as registered on the central server, e.g. 'opd-dinkes-01'.",
                    examples=["opd-dinkes-01"])
    name: str = _f("", "Human-readable name shown on the kiosk and in reports.")
    timezone: Literal["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"] = _f(
        "Asia/Jakarta", "Office timezone: Asia/Jakarta (WIB), Asia/Makassar (WITA) or Asia/Jayapura (WIT)."
    )
    latitude: float | None = _f(None, "Office latitude in degrees, stored with every punch.", min=-90, max=90,
                                example=-7.250445)
    longitude: float | None = _f(None, "Office longitude in degrees, stored with every punch.", min=-180, max=180,
                                 example=112.768845)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _check_id(value, empty_ok=False)


class Paths(Section):
    state_dir: str = Field(description="Directory for the database, keys and evidence (created 0700).",
                           examples=["/var/lib/presensi"])

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty; write a directory, e.g. state_dir = \"/var/lib/presensi\"")
        return value


class Central(Section):
    url: str | None = _f(None, "Base URL of the regency's central server; unset = keep punches locally.",
                         example="https://presensi.example-kab.go.id")
    token: str | None = _f(None, "Device token issued by `presensi server add-device`.", secret=True)
    server_key: str | None = _f(None, "The central server's Ed25519 public key (base64), pinned at set-up.")
    timeout: float = _f(10.0, "Connect and read timeout for each request, in seconds.", min=0.1)
    batch_size: int = _f(500, "Punches per upload batch; bounds memory whatever the backlog.", min=1, max=10000)
    push_interval: float = _f(15.0, "Seconds between push attempts while punches are pending.", min=0.1)
    max_backoff: float = _f(900.0, "Upper bound of the retry back-off after failures, in seconds.", min=0.01)
    retry_base: float = _f(1.0, "First retry back-off ceiling in seconds; doubles per failure (full jitter).",
                           min=0.001)
    heartbeat_interval: float = _f(60.0, "Seconds between heartbeats (sent even while uploads fail).", min=0.1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, cls.model_fields["url"].examples[0])


class Log(Section):
    checkpoint_every: int = _f(100, "Sign a checkpoint after this many punches (also signed on demand).", min=1)


class Web(Section):
    listen: str = _f("127.0.0.1:8080", "HOST:PORT of the local web server (kiosk, admin pages, pull API).")
    token: str | None = _f(None, "Bearer token central servers use for the pull API; unset = pull API off.",
                           secret=True)
    rate_limit: float = _f(20.0, "Pull-API requests per second allowed per client.", min=0.1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _check_listen(value, cls.model_fields["listen"].default)


class Camera(Section):
    enabled: bool = _f(True, "Use the camera for face punches.")
    source: str = _f("0", "Device index, /dev/videoN, GStreamer/libcamera pipeline, video file or frame folder.")
    width: int = _f(640, "Capture width in pixels.", min=16)
    height: int = _f(480, "Capture height in pixels.", min=16)
    fps: float = _f(15.0, "Frame rate (also the replay rate of a file source).", min=0.1)
    stall_seconds: float = _f(5.0, "No frame for this long is reported as a camera fault.", min=0.1)


class Face(Section):
    detector: Literal["hog", "yunet"] = _f("hog", "Face detector: dlib HOG (default) or YuNet (needs yunet_model).")
    yunet_model: str | None = _f(None, "Path of face_detection_yunet_2023mar.onnx (see `presensi models fetch`).")
    threshold: float = _f(0.51, "Largest embedding distance accepted as the same person (calibrated on LFW, "
                          "see docs/face-recognition.md).", min=0.0, max=2.0)
    margin: float = _f(0.09, "Required distance margin to the next-nearest employee.", min=0.0, max=2.0)
    frames_required: int = _f(3, "Frames that must agree on one employee before a decision.", min=1)
    min_face_px: int = _f(80, "Smallest face (box height in pixels) the quality gate accepts.", min=16)
    top_k: int = _f(1, "An employee's score is the mean distance of their top_k nearest templates.", min=1, max=20)
    max_frames: int = _f(6, "Embedded frames after which an unagreed face is refused (the n of k-of-n).", min=1)
    decision_timeout: float = _f(6.0, "Seconds after first sight after which a face without decision is refused.",
                                 min=0.5)
    min_sharpness: float = _f(12.0, "Least Laplacian variance of the aligned face chip (lower = blurred).", min=0.0)
    max_yaw: float = _f(0.35, "Largest nose offset from the eyes' midpoint, in eye distances (frontal pose).",
                        min=0.0, max=2.0)
    min_brightness: float = _f(50.0, "Darkest mean face brightness (0-255) the quality gate accepts.", min=0, max=255)
    max_brightness: float = _f(210.0, "Brightest mean face brightness (0-255) the quality gate accepts.",
                               min=0, max=255)
    detect_width: int = _f(640, "Frames wider than this are downscaled to this width for detection only.", min=80)
    motion_threshold: float = _f(2.0, "Mean grey-level change (0-255) below which an empty scene skips detection.",
                                 min=0.0)
    workers: int = _f(2, "Processes computing face embeddings (use the Pi's cores; 1 = in-process).", min=1, max=8)


class Liveness(Section):
    mode: Literal["off", "passive", "active", "passive+active", "auto"] = _f(
        "auto", "Presentation-attack checks: off, passive, active, passive+active or auto."
    )
    minifasnet_v2: str | None = _f(None, "Path of MiniFASNetV2.onnx (passive check).")
    minifasnet_v1se: str | None = _f(None, "Path of MiniFASNetV1SE.onnx (passive check).")
    passive_threshold: float = _f(0.5, "Passive real-face score at or above which a face passes.", min=0, max=1)
    challenge_seconds: float = _f(4.0, "Time an employee has to follow the on-screen challenge.", min=0.5)
    challenges: str = _f("left,right", "Comma-separated challenges picked at random: left, right, closer "
                         "(closer is weaker against cut-out prints, see docs/liveness.md).")
    turn_delta: float = _f(0.15, "Change of the yaw cue (nose offset / eye distance) that counts as a turn.",
                           min=0.05, max=0.6)
    passive_frames: int = _f(2, "Frames whose passive scores are averaged.", min=1, max=10)
    auto_trust: float = _f(1.0, "In auto mode, a passive score at or above this skips the challenge; "
                           "1.0 = never skip (lower it only after a field test, see docs/liveness.md).",
                           min=0, max=1)
    planar_correlation: float = _f(0.90, "Challenge: texture fit (0-1) of one homography from the frontal to the "
                                   "turned face at or above which, with a matching nose, it is a flat picture.",
                                   min=0.5, max=1)
    planar_nose_error: float = _f(0.12, "Challenge: nose misplacement (in eye distances) under that homography at "
                                  "or below which the face counts as flat.", min=0, max=1)
    identical_texture: float = _f(0.97, "Challenge: texture fit at or above which the face is the same flat "
                                  "picture whatever the nose does.", min=0.5, max=1)


class Fingerprint(Section):
    enabled: bool = _f(False, "Use a ZhianTec-family fingerprint sensor.")
    port: str = _f("/dev/serial0", "Serial port of the sensor.")
    baud: int = _f(57600, "Baud rate: a multiple of 9600 from 9600 to 115200.", min=9600, max=115200)
    password: int = _f(0, "Sensor password (32-bit).", min=0, max=0xFFFFFFFF)
    address: int = _f(0xFFFFFFFF, "Sensor address (32-bit).", min=0, max=0xFFFFFFFF)
    min_score: int = _f(50, "Lowest on-sensor match score accepted as a match.", min=0)
    reply_timeout: float = _f(1.0, "Seconds to wait for the sensor's next byte before the exchange counts as "
                              "failed (capture and search answer within about 1 s).", min=0.1, max=5)


class Gpio(Section):
    enabled: bool = _f(False, "Drive LEDs, buzzer, relay and button through GPIO.")
    pin_factory: Literal["auto", "rpigpio", "lgpio", "mock"] = _f("auto", "gpiozero pin factory.")
    green_led: int | None = _f(17, "BCM pin of the green LED.", min=0, max=40)
    red_led: int | None = _f(27, "BCM pin of the red LED.", min=0, max=40)
    buzzer: int | None = _f(22, "BCM pin of the buzzer.", min=0, max=40)
    door_relay: int | None = _f(None, "BCM pin of an optional door relay.", min=0, max=40)
    admin_button: int | None = _f(None, "BCM pin of an optional admin button.", min=0, max=40)


class Zk(Section):
    enabled: bool = _f(False, "Serve the ZKTeco port-4370 protocol (TCP and UDP).")
    listen: str = _f("0.0.0.0:4370", "HOST:PORT for the ZK protocol server.")
    comm_key: int = _f(0, "ZK communication key; 0 = none.", min=0, max=999999, secret=True)
    serial_number: str = _f("", "Serial number reported over ZK and used as the ADMS SN; empty = [device] id.")
    state_map: dict[str, int] = _f(
        {"masuk": 0, "in": 0, "apel": 0, "pulang": 1, "out": 1, "istirahat": 2, "istirahat_keluar": 2,
         "istirahat_kembali": 3, "lembur_masuk": 4, "lembur_pulang": 5},
        "Punch kind -> ZK punch state (0 check-in, 1 check-out, 2 break-out, 3 break-in, 4 OT-in, 5 OT-out); "
        "used by ZK and ADMS.",
    )
    unknown_state: int = _f(255, "ZK state for a punch kind missing from state_map (255 = undefined; "
                            "most servers then infer in/out).", min=0, max=255)
    verify_map: dict[str, int] = _f({"face": 15, "finger": 1, "pin": 3},
                          "Punch method -> ZK verify code (TFT/push: 1 fingerprint, 3 password, 4 card, 15 face; "
                          "old B&W: 0 password, 1 fingerprint, 2 card); used by ZK and ADMS.")
    verify_checksum: bool = _f(True, "Answer ACK_ERROR to ZK packets with a wrong checksum (off: accept them).")
    max_sessions: int = _f(16, "Concurrent ZK client sessions (TCP connections plus UDP sessions).", min=1, max=1024)
    session_idle_seconds: float = _f(120.0, "Close a ZK session idle this long (not during live capture).",
                                     min=0.1)
    session_max_seconds: float = _f(86400.0, "Close any ZK session after this long, live capture included.",
                                    min=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _check_listen(value, cls.model_fields["listen"].default)

    @field_validator("serial_number")
    @classmethod
    def _serial_number(cls, value: str) -> str:
        return _check_id(value, empty_ok=True)


class Adms(Section):
    enabled: bool = _f(False, "Push punches to an ADMS/iclock server.")
    url: str | None = _f(None, "Base URL of the ADMS server, e.g. http://host:8081.", example="http://host:8081")
    push_version: str = _f("2.4.1", "Push protocol version announced in the handshake (pushver).")
    timeout: float = _f(10.0, "Connect and read timeout of each ADMS request, in seconds.", min=0.1)
    batch_size: int = _f(500, "ATTLOG lines per upload; bounds memory whatever the backlog.", min=1, max=10000)
    delay: float = _f(10.0, "Seconds between getrequest polls until the server's Delay option says otherwise.",
                      min=0.1)
    error_delay: float = _f(30.0, "Seconds to wait after a failed request until the server's ErrorDelay "
                            "option says otherwise.", min=0.1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, cls.model_fields["url"].examples[0])


class Photos(Section):
    keep_days: int = _f(30, "Days to keep punch photos before they are deleted (0 = keep none).", min=0)


class Health(Section):
    interval: float = _f(5.0, "Seconds between self-tests; a failing part raises a fault within one interval.",
                         min=0.5)
    disk_warn_mb: float = _f(500.0, "Free space (MB) in state_dir below which a disk warning is raised, long "
                             "before a full disk refuses punches.", min=0)
    disk_critical_mb: float = _f(50.0, "Free space (MB) below which the disk fault is critical: punches will be "
                                 "refused soon.", min=0)
    temp_warn_c: float = _f(75.0, "CPU temperature (°C) at which a temperature warning is raised.", min=30)
    temp_critical_c: float = _f(82.0, "CPU temperature (°C) treated as a fault (the Pi throttles from 80-85).",
                                min=30)
    sync_lag_minutes: float = _f(60.0, "Punches waiting longer than this for the central server raise a sync "
                                 "warning.", min=1)
    clock_uncertainty_seconds: float = _f(120.0, "A corrected-time interval wider than this raises a clock "
                                          "warning.", min=1)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # as terminal/schedule.py spells them
DEFAULT_WINDOWS = {"masuk": "05:30-07:30-10:00", "pulang": "14:00-16:00-23:30"}


class Schedule(Section):
    """Punch kinds and lateness (terminal/schedule.py checks the windows; the roster's schedule wins)."""

    enabled: bool = _f(True, "Classify punches as masuk/istirahat/pulang/apel and compute lateness.")
    repeat_minutes: float = _f(
        30.0, "A punch this soon after the employee's previous one is acknowledged, not recorded again.",
        min=0, max=720)
    workdays: list = _f(["mon", "tue", "wed", "thu", "fri"], "Working weekdays (mon..sun); other days = libur.")
    default: dict = _f(DEFAULT_WINDOWS, "Windows of a working day: kind = 'OPEN-DUE-CLOSE' (HH:MM) or "
                       "'OPEN-CLOSE'; kinds apel, masuk, istirahat, pulang. Late after DUE (apel, masuk); "
                       "early leave before DUE (pulang).")
    mon: dict = _f({}, "Monday's windows over `default` (a kind set to '' is not punched that day).")
    tue: dict = _f({}, "Tuesday's windows over `default`.")
    wed: dict = _f({}, "Wednesday's windows over `default`.")
    thu: dict = _f({}, "Thursday's windows over `default`.")
    fri: dict = _f({}, "Friday's windows over `default` (Friday hours differ in many regencies).")
    sat: dict = _f({}, "Saturday's windows over `default` (used when sat is a workday).")
    sun: dict = _f({}, "Sunday's windows over `default` (used when sun is a workday).")
    holidays: list = _f([], "Public holidays: 'YYYY-MM-DD' or {date = 'YYYY-MM-DD', name = '...'} (with `to` "
                        "for a range); the roster's holidays are added when present.")
    special: list = _f([], "Special days: {from = 'YYYY-MM-DD', to = 'YYYY-MM-DD', name = '...', "
                       "workday = true|false, <kind> = 'OPEN-DUE-CLOSE'} (e.g. Ramadan hours, cuti bersama).")

    @field_validator("default", *WEEKDAYS)
    @classmethod
    def _windows(cls, value: dict) -> dict:
        from terminal.schedule import parse_windows  # lazy: only a file's own [schedule] pays for the import

        return _schedule_check(parse_windows, value)

    @field_validator("workdays")
    @classmethod
    def _workdays(cls, value: list) -> list:
        from terminal.schedule import _parse_workdays

        return _schedule_check(_parse_workdays, value)

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: list) -> list:
        from terminal.schedule import parse_holidays

        return _schedule_check(parse_holidays, value)

    @field_validator("special")
    @classmethod
    def _special(cls, value: list) -> list:
        from terminal.schedule import parse_special

        return _schedule_check(parse_special, value)


def _schedule_check(parse, value):
    """The schedule's own parser is the check (one definition of a valid window); ValueError = the fix."""
    try:
        parse(value)
    except (TypeError, AttributeError) as e:  # a value of a shape the parser does not expect at all
        raise ValueError(f"cannot be read ({e}); see the examples in config/presensi.example.toml") from None
    return value


class Roster(Section):
    pull_interval: float = _f(300.0, "Seconds between roster checks with the central server.", min=1)
    max_bundle_bytes: int = _f(64 * 1024 * 1024, "Largest roster bundle accepted (compressed bytes).", min=1024)
    max_employees: int = _f(10000, "Most employees a roster bundle may carry.", min=1)
    max_templates: int = _f(10, "Most face templates, photos or fingerprint templates per employee.", min=1)
    max_photo_bytes: int = _f(1024 * 1024, "Largest enrolment photo in a roster bundle, in bytes.", min=1024)


SECTIONS: dict[str, type[Section]] = {
    "device": Device,
    "paths": Paths,
    "central": Central,
    "log": Log,
    "web": Web,
    "camera": Camera,
    "face": Face,
    "liveness": Liveness,
    "fingerprint": Fingerprint,
    "gpio": Gpio,
    "zk": Zk,
    "adms": Adms,
    "photos": Photos,
    "schedule": Schedule,
    "health": Health,
    "roster": Roster,
}
REQUIRED_SECTIONS = ("device", "paths")
_SECTION_NAMES = {cls: name for name, cls in SECTIONS.items()}


class Config(BaseModel):
    """The validated configuration; one attribute per section."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    path: str = Field("<config>", description="The file the configuration was read from.")
    device: Device
    paths: Paths
    central: Central = Field(default_factory=Central)
    log: Log = Field(default_factory=Log)
    web: Web = Field(default_factory=Web)
    camera: Camera = Field(default_factory=Camera)
    face: Face = Field(default_factory=Face)
    liveness: Liveness = Field(default_factory=Liveness)
    fingerprint: Fingerprint = Field(default_factory=Fingerprint)
    gpio: Gpio = Field(default_factory=Gpio)
    zk: Zk = Field(default_factory=Zk)
    adms: Adms = Field(default_factory=Adms)
    photos: Photos = Field(default_factory=Photos)
    roster: Roster = Field(default_factory=Roster)
    schedule: Schedule = Field(default_factory=Schedule)
    health: Health = Field(default_factory=Health)

    @property
    def state_dir(self) -> Path:
        return Path(self.paths.state_dir)


# -- reading a file ---------------------------------------------------------------------------------------


def resolve_path(cli_path: str | None) -> str:
    """The file to read: ``-c FILE``, else ``$PRESENSI_CONFIG``, else the default."""
    return cli_path or os.environ.get("PRESENSI_CONFIG") or DEFAULT_PATH


def load(path: str | os.PathLike | None = None) -> Config:
    path = resolve_path(str(path) if path else None)
    return from_dict(parse_toml(read_text(path), path), path)


def read_text(path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found; copy config/presensi.example.toml there "
            "or pass -c FILE (or set PRESENSI_CONFIG)"
        ) from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the configuration file (permission denied); run as a user "
                          "who may read it, or make it readable (chmod 640, group presensi)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file; pass -c FILE") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path itself
        raise ConfigError(f"{path}: cannot read the configuration file ({getattr(e, 'strerror', None) or e}); "
                          "pass -c FILE") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        place = _place(raw.decode("utf-8", errors="replace"), raw.count(b"\n", 0, e.start) + 1)
        raise ConfigError(f"{path}: {place}not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8 "
                          "(e.g. `iconv -f latin1 -t utf-8`)") from None
    return text.removeprefix("\ufeff")  # a byte-order mark that some Windows editors write


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=")


def parse_toml(text: str, path: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POSITION.search(str(e))
        place = _place(text, int(m.group(1))) if m else ""
        raise ConfigError(f"{path}: {place}not valid TOML ({e}); fix the syntax at that line, "
                          'e.g. key = "text", key = 1.5, key = true') from None


def _place(text: str, number: int) -> str:
    """'[face] threshold (line 12): ' for line `number` of the file, so the user finds the key at once."""
    lines = text.split("\n")  # TOML counts lines by newline only (splitlines also splits on \f, \u2028, ...)
    section = ""
    for line in lines[:number]:
        header = line.strip()
        if header.startswith("[") and "]" in header:
            section = header[: header.index("]") + 1].strip("[]").strip()
    key = _TOML_KEY.match(lines[number - 1]) if 0 < number <= len(lines) else None
    where = " ".join(p for p in (f"[{section}]" if section else "", key.group(1) if key else "") if p)
    return f"{where} (line {number}): " if where else f"line {number}: "


def from_dict(data: dict, path: str = "<config>") -> Config:
    """Validate parsed TOML; every problem of every section is reported, one line each."""
    path = str(path)
    problems = []
    for name, raw in data.items():
        if name not in SECTIONS:
            problems.append(_unknown_section(name, raw))
        elif not isinstance(raw, dict):
            problems.append(f"[{name}] must be a table (a [{name}] section), not a value")
    for name in REQUIRED_SECTIONS:
        if name not in data:
            problems.append(f"missing section [{name}]; see config/presensi.example.toml")
    sections = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict) or (name not in data and name in REQUIRED_SECTIONS):
            continue
        try:
            sections[name] = cls(**raw)
        except ConfigError as e:
            problems.extend(e.lines)
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    return Config(path=path, **sections)


def _unknown_section(name: str, raw) -> str:
    if not isinstance(raw, dict):
        owners = [s for s, cls in SECTIONS.items() if name in cls.model_fields]
        hint = f"; it belongs under [{owners[0]}]" if len(owners) == 1 else "; put it under its [section]"
        return f"unknown key '{name}' outside any section{hint}"
    close = difflib.get_close_matches(name, SECTIONS, n=1)
    hint = f"did you mean [{close[0]}]? " if close else ""
    return f"unknown section [{name}]; {hint}known sections are {', '.join(sorted(SECTIONS))}"


# -- errors, one line each --------------------------------------------------------------------------------

_TYPE_NAMES = {"string_type": "a string", "float_type": "a number", "int_type": "a whole number",
               "bool_type": "true or false", "dict_type": "a table, e.g. { key = value }",
               "list_type": "a list, e.g. [\"a\", \"b\"]"}
_RANGE_ERRORS = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def _describe(cls: type[Section], err: dict) -> str:
    """One pydantic error as '[section] key ... ; what to write instead'."""
    section = _SECTION_NAMES.get(cls, cls.__name__.lower())
    loc = [str(p) for p in err["loc"]]
    key = loc[0] if loc else ""
    field = cls.model_fields.get(key)
    name = f"[{section}] {'.'.join(loc)}".rstrip()
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden" and len(loc) == 1:
        close = difflib.get_close_matches(key, cls.model_fields, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown key '{key}' in [{section}]; {hint}valid keys are {', '.join(cls.model_fields)}"
    if kind == "missing":
        return f"{name} is required: {field.description}" if field else f"{name} is required"
    if field is not None and value is not None and isinstance(value, int) and not isinstance(value, bool) \
            and _takes_float(field.annotation):
        value = float(value)  # shown as the number the program uses: -1 is -1.0 for a number key
    shown = _toml_value(value)
    if kind == "finite_number":
        return f"{name} = {shown} is not a number; write a finite number{_bounds_text(field)}{_example(key, field)}"
    if kind in _RANGE_ERRORS:
        return f"{name} = {shown} is out of range; {_bounds_text(field, lead='use a value')}"
    if kind == "literal_error":
        return f"{name} = {shown} is not allowed; use one of {err['ctx']['expected'].replace(' or ', ', ')}"
    if kind in _TYPE_NAMES:
        want = _TYPE_NAMES[kind]
        got = shown if isinstance(value, bool) else f"{_toml_kind(value)} {shown}"
        return f"{name} must be {want}, got {got}{_example(key, field) if len(loc) == 1 else ''}"
    if kind == "value_error":
        reason = str(err["ctx"]["error"])
        return f"{name}: {reason}" if isinstance(value, (dict, list)) else f"{name} = {shown}: {reason}"
    return f"{name}: {err['msg']}{_example(key, field)}"


def _takes_float(annotation) -> bool:
    return annotation is float or annotation == (float | None)


def _bounds(field) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in (field.metadata if field else ()):
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


def _bounds_text(field, lead: str = "") -> str:
    lo, hi = _bounds(field)
    if lo is not None and hi is not None:
        text = f"from {lo} to {hi}"
    elif lo is not None:
        text = f"of at least {lo}"
    elif hi is not None:
        text = f"of at most {hi}"
    else:
        return lead and f"{lead} within range"
    return f"{lead} {text}" if lead else f" {text}"


def _example(key: str, field) -> str:
    if field is None:
        return ""
    value = field.examples[0] if field.examples else field.get_default(call_default_factory=True)
    if value is None or value == {} or value == []:
        return "; see config/presensi.example.toml"
    return f", e.g. {key} = {_toml_value(value)}"


def _toml_kind(value) -> str:
    for typ, name in ((bool, "boolean"), (int, "whole number"), (float, "number"), (str, "string"),
                      (dict, "table"), (list, "list"), (datetime, "date-time"), (date, "date"), (time, "time")):
        if isinstance(value, typ):
            return name
    return type(value).__name__


# -- the effective configuration, as `presensi config check` prints it ---------------------------------


def effective(cfg: Config, *, redact: bool = True, json_mode: bool = False) -> dict[str, dict]:
    """{section: {key: value}} with every default filled in; secrets shown as <redacted> when set."""
    out = {}
    for name, cls in SECTIONS.items():
        values = getattr(cfg, name).model_dump(mode="json" if json_mode else "python")
        if redact:
            for key, f in cls.model_fields.items():
                if is_secret(f) and values[key] not in (None, "", 0):
                    values[key] = REDACTED
        out[name] = values
    return out


def is_secret(field) -> bool:
    return bool((field.json_schema_extra or {}).get("secret"))


def to_toml(data: dict[str, dict]) -> str:
    """Sections as TOML text; a key without a value (None) is written as a comment, as TOML has no null."""
    blocks = []
    for section, values in data.items():
        lines = [f"[{section}]"]
        for key, value in values.items():
            lines.append(f"# {key} =   (unset)" if value is None else f"{key} = {_toml_value(value)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, date, time)):  # datetime is a date: TOML writes both in ISO 8601
        return value.isoformat() if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{k if _BARE_KEY.match(str(k)) else json.dumps(str(k))} = {_toml_value(v)}"
                 for k, v in value.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    return repr(value)


def documented_keys() -> list[tuple[str, str, object, str]]:
    """(section, key, default, doc) for every key, for docs and the example-file test (required: None)."""
    out = []
    for name, cls in SECTIONS.items():
        for key, f in cls.model_fields.items():
            default = None if f.is_required() else f.get_default(call_default_factory=True)
            out.append((name, key, default, f.description))
    return out
