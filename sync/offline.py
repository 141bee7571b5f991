"""Offline delivery on a USB stick: `presensi export --to DIR` on the terminal, `presensi server import DIR`
on the central server (the rules let offline offices deliver by the 10th of the next month).

An export is one folder `<device>-<log_id[:8]>-<first>-<last>/` holding punches.jsonl (what the server
imports), punches.csv (for people), checkpoints.jsonl, manifest.json (counts, seq range, SHA-256 of every
file, the device's public key) and manifest.sig (Ed25519 signature of manifest.json by the device key).
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

from terminal import durable, identity, punchlog, syncstate

from .push import RECORD_FIELDS, TIME_FIELDS, annotate
from .server import ingest
from .server.storage import Store

FORMAT = "presensi-export/1"
FILES = ("punches.jsonl", "punches.csv", "checkpoints.jsonl")
BATCH = 1000


class ImportRefused(Exception):
    """The export is not trustworthy or not for this server; the message says why."""


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
           after_seq: int | None = None) -> dict:
    """Write the punches not yet acknowledged by the central server (or all after `after_seq`)."""
    to_dir = Path(to_dir)
    to_dir.mkdir(parents=True, exist_ok=True)
    with punchlog.PunchLog(state_dir) as log:
        target = syncstate.target_of(central_url)
        if after_seq is None:
            after_seq = syncstate.acked(log.conn, target, "punches", log.log_id) if target else 0
        head_cp = log.checkpoint()
        tmp = to_dir / f".partial-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        try:
            info = _write_files(log, tmp, after_seq)
            key = identity.load_key(state_dir)
            manifest = {
                "format": FORMAT, "device": device_id, "log_id": log.log_id, "after_seq": after_seq,
                **info.pop("range"), "head": {"seq": log.head()[0], "hash": log.head()[1]},
                "head_checkpoint": head_cp, "created_realtime_ns": time.time_ns(),
                "public_key": identity.public_key_b64(key), "files": info,
            }
            raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
            _write_synced(tmp / "manifest.json", raw)
            _write_synced(tmp / "manifest.sig", identity.sign_b64(key, raw).encode())
            first, last = manifest["first_seq"] or after_seq + 1, manifest["last_seq"] or after_seq
            final = to_dir / f"{device_id}-{log.log_id[:8]}-{first}-{last}"
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            durable.fsync_dir(to_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {"dir": str(final), **{k: manifest[k] for k in ("device", "log_id", "after_seq", "first_seq",
                                                           "last_seq", "count")}}


def _write_files(log: punchlog.PunchLog, tmp: Path, after_seq: int) -> dict:
    jsonl, csv_out, cps = (_HashingWriter(tmp / name) for name in FILES)
    fields = RECORD_FIELDS + TIME_FIELDS
    writer = csv.DictWriter(csv_out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    first = last = None
    count, cursor = 0, after_seq
    while True:
        batch = [{k: r[k] for k in RECORD_FIELDS} for r in log.records(after_seq=cursor, limit=BATCH, batch=BATCH)]
        if not batch:
            break
        for r in annotate(log.conn, batch):
            rec = {k: r.get(k) for k in fields}
            jsonl.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
            writer.writerow({**rec, "details": json.dumps(rec["details"], sort_keys=True, ensure_ascii=False),
                             "flags": ",".join(rec["flags"] or [])})
        first = batch[0]["seq"] if first is None else first
        last, cursor = batch[-1]["seq"], batch[-1]["seq"]
        count += len(batch)
    for row in log.conn.execute("SELECT log_id, seq, hash, signed_realtime_ns, public_key, signature "
                                "FROM checkpoints WHERE seq > ? ORDER BY seq, id", (after_seq,)):
        cps.write(json.dumps(dict(row), sort_keys=True) + "\n")
    files = {name: w.close() for name, w in zip(FILES, (jsonl, csv_out, cps), strict=True)}
    return {**files, "range": {"first_seq": first, "last_seq": last, "count": count}}


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())



# -- the server side ---------------------------------------------------------------------------------


def export_dirs(path: Path) -> list[Path]:
    """DIR itself when it is an export, else the exports directly inside it (oldest seq range first)."""
    path = Path(path)
    if (path / "manifest.json").exists():
        return [path]
    found = sorted((p for p in path.iterdir() if (p / "manifest.json").exists()), key=lambda p: p.name) \
        if path.is_dir() else []
    if not found:
        raise ImportRefused(f"{path}: no export here (expected manifest.json from `presensi export --to`)")
    return found


def read_manifest(store: Store, folder: Path) -> dict:
    try:
        raw = (folder / "manifest.json").read_bytes()
        sig = (folder / "manifest.sig").read_text().strip()
        manifest = json.loads(raw)
    except (OSError, ValueError) as e:
        raise ImportRefused(f"{folder}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ImportRefused(f"{folder}: not a {FORMAT} export")
    device = store.device(str(manifest.get("device")))
    if device is None:
        raise ImportRefused(f"{folder}: device {manifest.get('device')!r} is not registered on this server; "
                            "register it with `presensi server add-device` first")
    key_b64 = device["public_key"] or manifest.get("public_key")
    try:
        key = identity.public_key_from_b64(str(key_b64))
    except ValueError:
        raise ImportRefused(f"{folder}: no usable device public key") from None
    if not identity.verify_b64(key, sig, raw):
        raise ImportRefused(f"{folder}: the manifest signature does not match device "
                            f"{manifest['device']}'s key (altered, or exported by another device)")
    for name in FILES:
        expect = (manifest.get("files") or {}).get(name) or {}
        if _file_sha256(folder / name) != expect.get("sha256"):
            raise ImportRefused(f"{folder}/{name}: content does not match the signed manifest (altered or "
                                "damaged copy); export again from the terminal")
    if device["public_key"] is None:
        store.add_device(device["device_id"], device["token_sha256"], str(key_b64))
    return manifest


def _file_sha256(path: Path) -> str | None:
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
    except OSError:
        return None
    return sha.hexdigest()


def import_dir(store: Store, path: Path) -> dict:
    """Import every export in `path`; returns the totals (and the device/log of the last export)."""
    totals = {"stored": 0, "duplicates": 0, "flagged": 0, "exports": 0}
    for folder in export_dirs(Path(path)):
        manifest = read_manifest(store, folder)
        result = _import_records(store, folder, manifest)
        totals["exports"] += 1
        for k in ("stored", "duplicates", "flagged"):
            totals[k] += result[k]
        totals.update(device=manifest["device"], log_id=manifest["log_id"], acked_through=result["acked_through"])
    return totals


def _import_records(store: Store, folder: Path, manifest: dict) -> dict:
    device, log_id = manifest["device"], manifest["log_id"]
    checkpoints = [json.loads(line) for line in (folder / "checkpoints.jsonl").read_text().splitlines() if line]
    out = {"stored": 0, "duplicates": 0, "flagged": 0,
           "acked_through": store.acked_through(device, log_id)}
    after = manifest["after_seq"]
    batch: list[dict] = []

    def flush() -> None:
        nonlocal after, batch
        if not batch:
            return
        for i, rec in enumerate(batch):
            try:
                ingest.validate_record(rec, i)
            except ingest.BadBatch as e:
                raise ImportRefused(f"{folder}/punches.jsonl: {e}") from None
        hi = batch[-1]["seq"]
        cps = [c for c in checkpoints if after < c["seq"] <= hi]
        res = ingest.store_batch(store, device, log_id, after, batch, cps, source="import")
        for k in ("stored", "duplicates", "flagged"):
            out[k] += res[k]
        out["acked_through"], after, batch = res["acked_through"], hi, []

    with open(folder / "punches.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                batch.append(json.loads(line))
            except ValueError:
                raise ImportRefused(f"{folder}/punches.jsonl line {n}: not JSON") from None
            if len(batch) >= BATCH:
                flush()
    flush()
    return out
