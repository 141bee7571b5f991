"""The zk-attlog part of an offline import (`presensi server import`): the `<SERIAL>_attlog.dat` a terminal
wrote beside its signed export (`presensi export --format zk-attlog`; the format: sync/wire/offline.py).

The file is what regional systems read, so the central server makes sure it says what the hashed records say
before anything is stored: its SHA-256 must be the one in the signed manifest (a changed or added line is
refused), it must hold exactly one line per exported record, and each line must be the record's PIN, local
time, verify code, state and work code, recomputed here from the record with the timezone and maps the
manifest names. The records themselves then go through the same ingestion as every import, which dedupes on
(device, log, seq): importing the same stick twice stores nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

from sync.wire.offline import ZK_FORMAT, parse_zk_line, zk_attlog_name


class AttlogRefused(Exception):
    """The attendance file does not match the signed export; the message says where and why."""


def check(folder: Path, manifest: dict, file_sha256) -> int:
    """Raise AttlogRefused unless the export's attlog file is intact and agrees with its records; returns the
    number of lines. Exports of other formats have no attlog file: 0."""
    if manifest.get("format") != ZK_FORMAT:
        return 0
    spec = manifest.get("zk_attlog")
    if not isinstance(spec, dict) or spec.get("file") != zk_attlog_name(str(spec.get("serial"))):
        raise AttlogRefused(f"{folder}: the manifest does not name its ZK attendance file (zk_attlog.file)")
    path = folder / spec["file"]
    expect = (manifest.get("files") or {}).get(spec["file"]) or {}
    if file_sha256(path) != expect.get("sha256"):
        raise AttlogRefused(f"{path}: content does not match the signed manifest (a line was changed, added or "
                            "removed); nothing was imported. Export again from the terminal")
    try:
        tz = ZoneInfo(str(spec.get("timezone")))
    except (ValueError, KeyError):
        raise AttlogRefused(f"{folder}: unknown timezone {spec.get('timezone')!r} in zk_attlog") from None
    n = 0
    with open(folder / "punches.jsonl", encoding="utf-8") as records, open(path, encoding="utf-8") as lines:
        for n, (rec_line, att_line) in enumerate(_pairs(records, lines, path), 1):
            _compare(json.loads(rec_line), att_line, spec, tz, f"{path} line {n}")
    if n != spec.get("lines"):
        raise AttlogRefused(f"{path}: {n} lines, the manifest says {spec.get('lines')}")
    return n


def _pairs(records, lines, path: Path):
    for rec_line in records:
        att_line = lines.readline()
        if not att_line:
            raise AttlogRefused(f"{path}: fewer lines than exported punches (a line was removed)")
        yield rec_line, att_line
    if lines.readline():
        raise AttlogRefused(f"{path}: more lines than exported punches (a line was added)")


def _compare(rec: dict, line: str, spec: dict, tz, where: str) -> None:
    try:
        got = parse_zk_line(line)
    except ValueError as e:
        raise AttlogRefused(f"{where}: not a ZK attlog line ({e})") from None
    details = rec.get("details") if isinstance(rec.get("details"), dict) else {}
    code = details.get("work_code")
    derived = rec.get("derived") if isinstance(rec.get("derived"), dict) else {}
    kind = derived.get("kind") or rec.get("kind") or details.get("kind") or ""
    if rec.get("utc"):
        utc = dt.datetime.fromisoformat(str(rec["utc"]).replace("Z", "+00:00"))
    else:
        utc = dt.datetime.fromtimestamp(rec["realtime_ns"] / 1e9, dt.UTC)
    want = {"pin": rec.get("employee"), "time": utc.astimezone(tz).replace(tzinfo=None, microsecond=0),
            "verify": (spec.get("verify_map") or {}).get(rec.get("method"), 0),
            "state": (spec.get("state_map") or {}).get(kind, spec.get("unknown_state", 255)),
            "work_code": code if isinstance(code, int) and not isinstance(code, bool) else 0}
    wrong = [f"{k} {got[k]!r} (the record says {want[k]!r})" for k in want if got[k] != want[k]]
    if wrong:
        raise AttlogRefused(f"{where}: does not match punch seq {rec.get('seq')}: {', '.join(wrong)}")
