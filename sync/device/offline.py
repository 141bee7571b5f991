"""Offline delivery on a USB stick, the terminal's side: `presensi export --to DIR` (the central server's
side, `presensi server import DIR`, is sync/server/offline.py; the format both agree on, sync/wire/offline.py).
The rules let offline offices deliver by the 10th of the next month.

An export is one folder `<device>-<log_id[:8]>-<first>-<last>/` holding punches.jsonl (what the server
imports: each record with its time interval, basis and flags), punches.csv (for people), checkpoints.jsonl,
samples.jsonl (every time sample: the evidence behind the intervals, so the server can re-anchor and check
them), manifest.json (counts, seq range, SHA-256 of every file, the device's public key) and manifest.sig
(Ed25519 signature of manifest.json by the device key).
The folder is written under a temporary name and renamed when complete, so a pulled stick never holds a
half export that looks whole. Import checks signature and file hashes, then feeds the records through the
same ingestion as a push: dedupe against pushed records, chain checks, alarms.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from sync.wire.offline import FILES, FORMAT, SAMPLE_FIELDS, ZK_FORMAT
from terminal import durable, identity
from terminal.errors import StorageError, StorageFull
from terminal.log import chain, punchlog, syncstate
from terminal.punch.workcodes import code_of

from .push import RECORD_FIELDS, TIME_FIELDS, annotate
from .zkattlog import ZkAttlog

BATCH = 1000
CSV_DERIVED = ("derived_kind", "minutes_late", "minutes_early", "local_date", "local_time", "time_verified")


def csv_derived(rec: dict) -> dict:
    """The derived values as csv columns (the hashed `kind` column is empty for records since schema 7)."""
    d = rec.get("derived") or {}
    return {"derived_kind": punchlog.kind_of(rec), **{k: d.get(k) for k in CSV_DERIVED[1:]}}


class _HashingWriter:
    def __init__(self, path: Path):
        self.f = open(path, "w", encoding="utf-8", newline="")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.sha.update(data)
        self.size += len(data)
        self.f.write(text)

    def close(self) -> dict:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return {"sha256": self.sha.hexdigest(), "bytes": self.size}


def export(state_dir: Path, device_id: str, central_url: str | None, to_dir: Path,
           after_seq: int | None = None, zk: ZkAttlog | None = None) -> dict:
    """Write the punches not yet acknowledged by the central server (or all after `after_seq`); with `zk`,
    also the ZKTeco attendance file `<SERIAL>_attlog.dat` (format zk-attlog, sync/wire/offline.py)."""
    to_dir = Path(to_dir)
    to_dir.mkdir(parents=True, exist_ok=True)
    with punchlog.PunchLog(state_dir, readonly=True) as log:  # works on a full disk
        target = syncstate.target_of(central_url)
        if after_seq is None:
            after_seq = syncstate.acked(log.conn, target, "punches", log.log_id) if target else 0
        head_cp = _head_checkpoint(state_dir, log)
        tmp = to_dir / f".partial-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        try:
            info = _write_files(log, tmp, after_seq, zk)
            key = identity.load_key(state_dir)
            zk_entry = info.pop("zk_attlog", None)
            manifest = {
                "format": ZK_FORMAT if zk else FORMAT, "device": device_id, "log_id": log.log_id,
                "after_seq": after_seq,
                **info.pop("range"), "head": {"seq": log.head()[0], "hash": log.head()[1]},
                "head_checkpoint": head_cp, "created_realtime_ns": time.time_ns(),
                "public_key": chain.public_key_b64(key), "files": info,
                **({"zk_attlog": zk_entry} if zk else {}),
            }
            raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
            _write_synced(tmp / "manifest.json", raw)
            _write_synced(tmp / "manifest.sig", chain.sign_b64(key, raw).encode())
            first, last = manifest["first_seq"] or after_seq + 1, manifest["last_seq"] or after_seq
            final = to_dir / f"{device_id}-{log.log_id[:8]}-{first}-{last}"
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            durable.fsync_dir(to_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    out = {"dir": str(final), "format": manifest["format"],
           **{k: manifest[k] for k in ("device", "log_id", "after_seq", "first_seq", "last_seq", "count", "samples")}}
    if zk:
        out["zk_attlog"] = str(final / zk.file_name)
    return out


def _head_checkpoint(state_dir: Path, reader: punchlog.PunchLog) -> dict | None:
    """The head's checkpoint, stored in the log when the disk allows (a writer of its own), else signed
    for this export only: the export must work on a full disk."""
    try:
        with punchlog.PunchLog(state_dir) as writer:
            return writer.head_checkpoint()
    except (StorageFull, StorageError):
        return reader.head_checkpoint()


def _write_files(log: punchlog.PunchLog, tmp: Path, after_seq: int, zk: ZkAttlog | None = None) -> dict:
    jsonl, csv_out, cps, samples = (_HashingWriter(tmp / name) for name in FILES)
    attlog = _HashingWriter(tmp / zk.file_name) if zk else None
    fields = RECORD_FIELDS + TIME_FIELDS
    # kind and lateness are derived values beside the record (terminal/punch/derived.py): `derived` in the
    # jsonl (the server's import stores it beside the record), and readable columns in the csv
    writer = csv.DictWriter(csv_out, fieldnames=fields + CSV_DERIVED + ("work_code",), extrasaction="ignore")
    writer.writeheader()
    first = last = None
    count, cursor = 0, after_seq
    while True:
        batch = [{**{k: r[k] for k in RECORD_FIELDS}, "derived": r.get("derived")}
                 for r in log.records(after_seq=cursor, limit=BATCH, batch=BATCH)]
        if not batch:
            break
        for r in annotate(log.conn, batch):
            rec = {**{k: r.get(k) for k in fields}, "derived": r.get("derived")}
            jsonl.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
            writer.writerow({**rec, "details": json.dumps(rec["details"], sort_keys=True, ensure_ascii=False),
                             "flags": ",".join(rec["flags"] or []), **csv_derived(rec), "work_code": code_of(rec)})
            if attlog is not None:
                attlog.write(zk.line(rec))
        first = batch[0]["seq"] if first is None else first
        last, cursor = batch[-1]["seq"], batch[-1]["seq"]
        count += len(batch)
    for row in log.conn.execute("SELECT log_id, seq, hash, signed_realtime_ns, public_key, signature "
                                "FROM checkpoints WHERE seq > ? ORDER BY seq, id", (after_seq,)):
        cps.write(json.dumps(dict(row), sort_keys=True) + "\n")
    n_samples = _write_samples(log, samples)
    files = {name: w.close() for name, w in zip(FILES, (jsonl, csv_out, cps, samples), strict=True)}
    extra = {}
    if attlog is not None:
        files[zk.file_name] = attlog.close()
        extra["zk_attlog"] = zk.manifest(count)
    return {**files, **extra, "range": {"first_seq": first, "last_seq": last, "count": count, "samples": n_samples}}


def _write_samples(log: punchlog.PunchLog, out: _HashingWriter) -> int:
    """Every stored time sample (they are few: about one per source and hour), oldest first, in batches."""
    n, after = 0, 0
    while True:
        rows = log.conn.execute(f"SELECT {', '.join(SAMPLE_FIELDS)} FROM time_samples WHERE id > ? ORDER BY id "
                                "LIMIT ?", (after, BATCH)).fetchall()
        if not rows:
            return n
        for r in rows:
            d = dict(zip(SAMPLE_FIELDS, tuple(r), strict=True))
            d["evidence"] = json.loads(d["evidence"] or "{}")
            out.write(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n")
        n, after = n + len(rows), rows[-1][0]


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
