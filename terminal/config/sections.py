"""The sections of presensi.toml, one pydantic model each (see terminal/config/__init__.py for why).

Each field carries its default and its documentation; config/presensi.example.toml documents the same keys
and tests/test_config.py keeps the two in step. A section class is named after its [section].
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from terminal.config import windows
from terminal.config.fields import Section, _check_id, _check_listen, _check_url, _f

TIMEZONES = ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura")


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
    enrolment_code: str | None = _f(None, "One-time enrolment code from `presensi server add-device` (when no "
                                    "--public-key was given there): binds this device's key on first contact.",
                                    secret=True)
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
    source: str = _f("0", "Device index, /dev/videoN, picamera2 (the Pi camera module), auto (the Pi camera if "
                     "present, else a USB webcam), GStreamer pipeline, video file or frame folder.")
    kind: str = _f("auto", "Source kind (drivers/camera/registry.py): auto (from the spelling of source), detect, "
                   "picamera2, opencv, gstreamer, video or folder.")
    width: int = _f(640, "Capture width in pixels.", min=16)
    height: int = _f(480, "Capture height in pixels.", min=16)
    fps: float = _f(15.0, "Frame rate (also the replay rate of a file source).", min=0.1)
    stall_seconds: float = _f(5.0, "No frame for this long is reported as a camera fault.", min=0.1)
    # The Pi camera's exposure and white balance (picamera2 only; a USB webcam keeps its own automatics).
    exposure: Literal["auto"] | Annotated[int, Field(ge=100, le=1_000_000)] = _f(
        "auto", "Pi camera exposure: auto, or a fixed exposure time in microseconds (100-1000000; a dim "
        "corridor: 30000).")
    exposure_mode: Literal["normal", "short", "long"] = _f(
        "normal", "Pi camera auto-exposure mode: normal, short or long (long = a dim corridor).")
    analogue_gain: float = _f(0.0, "Pi camera analogue gain (1-16); 0 = chosen by the auto-exposure.", min=0.0,
                              max=16.0)
    awb_mode: Literal["auto", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy"] = _f(
        "auto", "Pi camera white balance: auto, incandescent, tungsten, fluorescent, indoor, daylight or cloudy.")

    @field_validator("exposure", mode="before")
    @classmethod
    def _exposure(cls, value):
        # one message for both spellings, instead of one per member of the union
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 1_000_000):
            return value
        raise ValueError('must be "auto" or an exposure time in microseconds from 100 to 1000000 (a dim '
                         "corridor: 30000)")

    @field_validator("analogue_gain")
    @classmethod
    def _gain(cls, value: float) -> float:
        if 0.0 < value < 1.0:
            raise ValueError("must be 0 (automatic) or from 1 to 16")
        return value

    def source_options(self) -> dict:
        """The settings only some source kinds use (drivers/camera/picamera2.py reads them)."""
        return {"exposure": self.exposure, "exposure_mode": self.exposure_mode,
                "analogue_gain": self.analogue_gain, "awb_mode": self.awb_mode}


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
    model: str = _f("zhiantec", "Sensor model (drivers/fingerprint/registry.py): zhiantec (R30x, R503, AS608 on a "
                    "UART) or emulator (an emulated sensor on a pty, no hardware; port unused).")
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
    max_sessions_per_address: int = _f(
        4, "Concurrent ZK sessions one client address may hold, so one host cannot take every slot.",
        min=1, max=1024)
    handshake_seconds: float = _f(
        5.0, "A TCP connection that has not connected and authenticated within this many seconds is closed.",
        min=0.5, max=120)
    trust_set_time: bool = _f(
        False, "Treat SetTime from an authenticated ZK client as a trusted time sample (needs a comm_key). "
        "Risk: anyone who knows the comm key can shift punch times and lateness; off, SetTime is audited as "
        "a claim and never moves the time.")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _check_listen(value, cls.model_fields["listen"].default)

    @field_validator("serial_number")
    @classmethod
    def _serial_number(cls, value: str) -> str:
        return _check_id(value, empty_ok=True)

    @model_validator(mode="after")
    def _trust_needs_a_key(self):
        # with comm_key 0 every client is "authenticated": trusting its SetTime would trust anyone on the LAN
        if self.trust_set_time and self.comm_key == 0:
            raise ValueError("trust_set_time = true needs a comm_key other than 0 (with 0 anyone on the network "
                             "could set the time); set comm_key or trust_set_time = false")
        return self


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
    roster_authority: bool = _f(
        False, "Apply the ADMS server's people commands (USERINFO, FINGERTMP, user DELETE/CLEAR). ADMS is plain "
        "HTTP: anyone who can spoof the server could then add or remove employees. Off, they are acknowledged, "
        "audited and ignored (the roster comes from the central server).")
    max_reply_bytes: int = _f(1024 * 1024, "Largest ADMS server reply read; a longer one is cut off, refused and "
                              "retried later.", min=4096, max=64 * 1024 * 1024)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, cls.model_fields["url"].examples[0])


WORK_CODE_KINDS = ("apel", "masuk", "istirahat", "pulang")
DEFAULT_WORK_CODES = [
    {"code": 1, "label": "Dinas Luar", "kinds": ["masuk", "pulang"]},
    {"code": 2, "label": "Izin keluar", "kinds": []},
    {"code": 3, "label": "Kembali dari izin", "kinds": []},
    {"code": 4, "label": "Lembur", "kinds": ["pulang"]},
]


class WorkCode(BaseModel):
    """One entry of [work_codes] codes: checked here, stored as plain data (see WorkCodes.codes)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    code: int = Field(ge=1, le=255, description="The number ZK machines record as the work code (1-255).")
    label: str = Field(min_length=1, max_length=40, description="What the kiosk shows, in Bahasa Indonesia.")
    kinds: list[Literal["apel", "masuk", "istirahat", "pulang"]] = Field(
        default_factory=list, description="Punch kinds the code applies to; empty = every kind.")


class WorkCodes(Section):
    SECTION: ClassVar[str] = "work_codes"

    enabled: bool = _f(True, "Offer work codes (the reason of a punch) on the kiosk, the fingerprint button and "
                       "`presensi punch --work-code`.")
    codes: list[dict] = _f(DEFAULT_WORK_CODES, "The work codes: code (the number ZK records, 1-255), label (Bahasa "
                           "Indonesia, at most 40 characters) and kinds (the punch kinds it applies to: apel, masuk, "
                           "istirahat, pulang; empty = every kind).")
    before_punch_seconds: float = _f(20.0, "A code chosen before a punch (kiosk touch, fingerprint button) applies "
                                     "to the next punch within this many seconds.", min=1, max=300)
    after_punch_seconds: float = _f(0.0, "After a face or finger is recognised, the kiosk offers the codes of the "
                                    "punch's kind this long and records the punch with the choice (0 = off: "
                                    "record at once; a code is then chosen before the punch). At most 15 s: the "
                                    "face or finger worker waits meanwhile, and one silent for 20 s is restarted.",
                                    min=0, max=15)
    button_pin: int | None = _f(None, "BCM pin of a work-code button for the fingerprint path (needs [gpio] "
                                "enabled): each press selects the next code for the next punch.", min=0, max=40)

    @field_validator("codes")
    @classmethod
    def _codes(cls, value: list) -> list[dict]:
        out, seen = [], set()
        for i, entry in enumerate(value):
            if not isinstance(entry, dict):
                raise ValueError(f"entry {i + 1} must be a table like {{ code = 1, label = \"Dinas Luar\", "
                                 "kinds = [\"masuk\"] }")
            try:
                code = WorkCode(**entry)
            except ValidationError as e:  # say which entry and which of its keys
                problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ValueError(f"entry {i + 1}: {problems}") from None
            if code.code in seen:
                raise ValueError(f"code {code.code} appears twice; each code must be unique")
            seen.add(code.code)
            out.append(code.model_dump())
        return out


class Photos(Section):
    keep_days: int = _f(30, "Days to keep punch photos before they are deleted (0 = keep none). Photos of "
                        "punches the central server has not acknowledged, and of open or undelivered faults, "
                        "are kept longer, until delivered.", min=0)
    max_mb: float = _f(2048.0, "Hard cap (MB) on the photos in state_dir: above it the oldest photos are "
                       "deleted even if not yet delivered, with a disk fault (0 = no cap).", min=0)


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
    kernel_log: str = _f("journal", "Where SD-card I/O errors are looked for: journal (journalctl -k of this boot), "
                         "the path of a file of kernel messages (/var/log/kern.log, /dev/kmsg) or off.")


class Time(Section):
    """Offline time sources (terminal/timing/rtc.py, gps.py; read by the daemon's time_sources job and
    `presensi time sources`). None is required; ZK SetTime and ADMS DateTime are never among them."""

    rtc: Literal["off", "kernel", "fake"] = _f(
        "off", "Hardware RTC as a time source (drivers/rtc/registry.py): off, kernel (a battery-backed RTC such "
        "as a DS3231 board or the Pi 5's RTC with its battery) or fake (a test directory, see drivers/rtc/fake.py).")
    rtc_path: str = _f("/sys/class/rtc/rtc0", "The RTC's sysfs directory (since_epoch, date, time) it is read from.")
    rtc_device: str = _f("/dev/rtc0", "The RTC's character device: read when rtc_path is no directory, and set "
                         "through it (needs CAP_SYS_TIME; without it the daemon only remembers the RTC's offset).")
    rtc_drift_ppm: float = _f(50.0, "The RTC's rated drift in ppm; its error bound grows by this since its "
                              "calibration (DS3231: 2 at 0-40 °C, 3.5 over -40-85 °C; a plain 32 kHz crystal: 20-50).",
                              min=0.1, max=500)
    rtc_set: bool = _f(True, "Set the RTC after a trusted sample (central server, NTP, GPS) when it is off by more "
                       "than its one-second resolution.")
    gps: Literal["off", "gpsd"] = _f("off", "GPS time through gpsd (Debian's gpsd package): off or gpsd.")
    gpsd_host: str = _f("127.0.0.1", "Host of gpsd's JSON protocol: this machine only (127.0.0.1, ::1, localhost), "
                        "because the protocol is unauthenticated and a GPS fix may set the RTC.")
    gpsd_port: int = _f(2947, "Port of gpsd's JSON protocol.", min=1, max=65535)
    gps_max_latency_s: float = _f(1.0, "Largest delay from a GPS fix's second to its report arriving (NMEA "
                                  "over serial, gpsd's cycle): the sample's interval is [fix time, fix time + this].",
                                  min=0.01, max=10)
    gps_timeout: float = _f(5.0, "Seconds to wait for a GPS fix before the read counts as failed.", min=0.5, max=120)
    kernel_ntp: bool = _f(True, "Record the kernel's time as a sample while it says it is NTP-synchronised "
                          "(chrony, systemd-timesyncd), with its maximum error.")
    sources_interval: float = _f(600.0, "Seconds between readings of the offline time sources (also read once "
                                 "at start); GPS, RTC and NTP samples are kept at most one per hour per boot.", min=1)

    @field_validator("gpsd_host")
    @classmethod
    def _gpsd_host(cls, value: str) -> str:
        if value.strip().lower().strip("[]") not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("must be this machine (127.0.0.1, ::1 or localhost): gpsd's protocol is "
                             "unauthenticated, so a gpsd elsewhere on the network would let anyone there set the "
                             "terminal's time; run gpsd on the terminal with the receiver attached")
        return value


DEFAULT_WINDOWS = {"masuk": "05:30-07:30-10:00", "pulang": "14:00-16:00-23:30"}


class Schedule(Section):
    """Punch kinds and lateness: terminal/config/windows.py reads the windows, terminal/punch/rules.py applies
    them; the roster's published schedule wins over this section."""

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

    @field_validator("default", *windows.WEEKDAYS)
    @classmethod
    def _windows(cls, value: dict) -> dict:

        return _schedule_check(windows.parse_windows, value)

    @field_validator("workdays")
    @classmethod
    def _workdays(cls, value: list) -> list:

        return _schedule_check(windows.parse_workdays, value)

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: list) -> list:

        return _schedule_check(windows.parse_holidays, value)

    @field_validator("special")
    @classmethod
    def _special(cls, value: list) -> list:

        return _schedule_check(windows.parse_special, value)


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
    "time": Time,
    "work_codes": WorkCodes,
}
