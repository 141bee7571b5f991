"""The offline export format (`presensi export --to DIR` on a terminal, `presensi server import DIR` on the
central server): one folder `<device>-<log_id[:8]>-<first>-<last>/` holding punches.jsonl (what the server
imports), punches.csv (for people), checkpoints.jsonl, samples.jsonl (format 2), manifest.json (counts, seq
range, SHA-256 of every file, the device's public key) and manifest.sig (the device key's Ed25519 signature of
manifest.json, base64).

Each punches.jsonl line is the hashed record plus its derived time at export: `utc`, `earliest`, `latest`
(ISO 8601 UTC, or null when unbounded), `basis` (the source of the tightest sample, "order" or "none") and
`flags`. samples.jsonl holds every time sample the terminal has stored, one JSON object a line with
SAMPLE_FIELDS: the evidence the intervals were computed from (signed server answers, RTC readings and their
calibration, GPS fixes, kernel NTP status, and the ZK/ADMS claims that were recorded but not trusted).
Format 1 exports (without samples.jsonl) are still imported.

The zk-attlog format (`presensi export --format zk-attlog`) is format 2 plus the file a ZKTeco machine writes
to a USB stick, `<SERIAL>_attlog.dat`: one line per punch, in seq order, tab-separated: PIN (the employee id,
the 18-digit NIP), local "YYYY-MM-DD HH:MM:SS", verify mode, state, work code (0 = none), CRLF-free "\n" line
ends, UTF-8. Regional systems read that file; the manifest (`zk_attlog`: file name, serial, the timezone and
the verify/state maps the lines were made with) and its signature cover it like every other file, and the
central server checks each line against the hashed record it stands for.
"""

import datetime as dt

FORMAT = "presensi-export/2"
FORMATS = {"presensi-export/1": ("punches.jsonl", "punches.csv", "checkpoints.jsonl"),
           "presensi-export/2": ("punches.jsonl", "punches.csv", "checkpoints.jsonl", "samples.jsonl")}
FILES = FORMATS[FORMAT]
SAMPLE_FIELDS = ("id", "source", "boot_id", "sent_monoraw_ns", "monoraw_ns", "realtime_ns", "utc_ns",
                 "uncertainty_ns", "head_seq", "status", "evidence")

ZK_FORMAT = "presensi-zk-attlog/1"
FORMATS[ZK_FORMAT] = FORMATS[FORMAT]
ZK_FIELDS = ("pin", "time", "verify", "state", "work_code")
ZK_TIME = "%Y-%m-%d %H:%M:%S"


def zk_attlog_name(serial: str) -> str:
    """What ZK machines name the attendance file on a stick (by serial; some models use the machine number)."""
    return f"{serial}_attlog.dat"


def zk_line(pin: str, local: dt.datetime, verify: int, state: int, work_code: int) -> str:
    return f"{pin}\t{local:{ZK_TIME}}\t{verify}\t{state}\t{work_code}\n"


def parse_zk_line(line: str) -> dict:
    """One attlog line as its fields; ValueError names what is wrong."""
    parts = line.rstrip("\n").split("\t")
    if len(parts) != len(ZK_FIELDS):
        raise ValueError(f"{len(parts)} tab-separated fields, expected {len(ZK_FIELDS)} ({', '.join(ZK_FIELDS)})")
    pin, time_text, *numbers = parts
    if not pin.strip():
        raise ValueError("the PIN is empty")
    local = dt.datetime.strptime(time_text, ZK_TIME)
    verify, state, work_code = (int(n) for n in numbers)
    return {"pin": pin.strip(), "time": local, "verify": verify, "state": state, "work_code": work_code}
