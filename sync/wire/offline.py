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
"""

FORMAT = "presensi-export/2"
FORMATS = {"presensi-export/1": ("punches.jsonl", "punches.csv", "checkpoints.jsonl"),
           "presensi-export/2": ("punches.jsonl", "punches.csv", "checkpoints.jsonl", "samples.jsonl")}
FILES = FORMATS[FORMAT]
SAMPLE_FIELDS = ("id", "source", "boot_id", "sent_monoraw_ns", "monoraw_ns", "realtime_ns", "utc_ns",
                 "uncertainty_ns", "head_seq", "status", "evidence")
