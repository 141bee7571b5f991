"""The offline export format (`presensi export --to DIR` on a terminal, `presensi server import DIR` on the
central server): one folder `<device>-<log_id[:8]>-<first>-<last>/` holding punches.jsonl (what the server
imports), punches.csv (for people), checkpoints.jsonl, manifest.json (counts, seq range, SHA-256 of every file,
the device's public key) and manifest.sig (the device key's Ed25519 signature of manifest.json, base64).
"""

FORMAT = "presensi-export/1"
FILES = ("punches.jsonl", "punches.csv", "checkpoints.jsonl")
