"""Offline delivery on a USB stick, the central server's side: `presensi server import DIR` reads what
`presensi export --to DIR` wrote on a terminal (sync/device/offline.py; the format: sync/wire/offline.py).

Import checks the manifest's device signature and every file's hash, then feeds the records through the same
ingestion as a push: dedupe against pushed records, chain checks, alarms.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sync.wire.offline import FILES, FORMAT
from terminal.log import chain

from . import ingest
from .storage import Store

BATCH = 1000


class ImportRefused(Exception):
    """The export is not trustworthy or not for this server; the message says why."""


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
    key_b64 = device["public_key"]
    if not key_b64:  # the stick's own key would vouch for itself: anyone could make one
        raise ImportRefused(f"{folder}: device {manifest['device']}'s key is not bound on this server yet; bind it "
                            f"with `presensi server rebind-device {manifest['device']} --public-key B64` (the key "
                            "`presensi init` prints on the terminal) and import again")
    try:
        key = chain.public_key_from_b64(str(key_b64))
    except ValueError:
        raise ImportRefused(f"{folder}: no usable device public key") from None
    if not chain.verify_b64(key, sig, raw):
        raise ImportRefused(f"{folder}: the manifest signature does not match device "
                            f"{manifest['device']}'s key (altered, or exported by another device)")
    for name in FILES:
        expect = (manifest.get("files") or {}).get(name) or {}
        if _file_sha256(folder / name) != expect.get("sha256"):
            raise ImportRefused(f"{folder}/{name}: content does not match the signed manifest (altered or "
                                "damaged copy); export again from the terminal")
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
