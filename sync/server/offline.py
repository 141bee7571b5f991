"""Offline delivery on a USB stick, the central server's side: `presensi server import DIR` reads what
`presensi export --to DIR` wrote on a terminal (sync/device/offline.py; the format: sync/wire/offline.py).

Import checks the manifest's device signature and every file's hash, then feeds the records through the same
ingestion as a push: dedupe against pushed records, chain checks, alarms. Then it re-anchors: it stores the
export's time samples (samples.jsonl, format 2) and sets every exported punch's derived time (utc, earliest,
latest, basis, flags) to the export's, also for punches delivered before (pushed or imported from an older
stick), because a later export carries the terminal's newer estimate. Derived values never touch a record
whose hash differs from the export's (that is a conflict, alarmed by ingestion).

The server does not redo the terminal's fit (terminal/timing/fitting.py: the import rules keep the terminal's
runtime out of sync/server). It checks each interval independently against the samples instead: from every
accepted sample of the punch's boot (ZK/ADMS claims excluded), the punch lies within the sample's interval
widened by MAX_RATE_PPM (the kernel's limit for any clock) times the raw-clock distance; an exported interval
disjoint from that envelope raises a `time-mismatch` alarm. Kinds and lateness: see _derived_hook().
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sync.wire.offline import FORMATS, SAMPLE_FIELDS
from terminal.log import chain

from . import ingest, zkattlog
from .storage import Store

BATCH = 1000
MAX_RATE_PPM = 500  # no clock of a working machine runs farther off than this (the kernel refuses more)
UNTRUSTED_SOURCES = ("zk-settime", "adms-datetime")  # recorded claims, never evidence of the time
DERIVED_TIME = ("utc", "earliest", "latest", "basis")


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
    if not isinstance(manifest, dict) or manifest.get("format") not in FORMATS:
        raise ImportRefused(f"{folder}: not a presensi export (format {', '.join(FORMATS)})")
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
    for name in FORMATS[manifest["format"]]:
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
    totals = {"stored": 0, "duplicates": 0, "flagged": 0, "exports": 0, "samples": 0, "reanchored": 0,
              "time_mismatches": 0}
    for folder in export_dirs(Path(path)):
        manifest = read_manifest(store, folder)
        try:
            lines = zkattlog.check(folder, manifest, _file_sha256)
        except zkattlog.AttlogRefused as e:
            raise ImportRefused(str(e)) from None
        totals["zk_attlog_lines"] = totals.get("zk_attlog_lines", 0) + lines
        result = _import_records(store, folder, manifest)
        samples = _import_samples(store, folder, manifest)
        result.update(_reanchor(store, folder, manifest, samples))
        totals["exports"] += 1
        for k in ("stored", "duplicates", "flagged", "reanchored", "time_mismatches"):
            totals[k] += result[k]
        totals["samples"] += len(samples)
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


# -- time samples and re-anchoring -------------------------------------------------------------------------------


def _check_sample(d, n: int, folder: Path) -> dict:
    ints = ("id", "monoraw_ns", "utc_ns", "uncertainty_ns")
    ok = isinstance(d, dict) and all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool) for k in ints) \
        and all(d.get(k) is None or (isinstance(d[k], int) and not isinstance(d[k], bool))
                for k in ("sent_monoraw_ns", "realtime_ns", "head_seq")) \
        and all(isinstance(d.get(k), str) and 0 < len(d[k]) <= 200 for k in ("source", "boot_id", "status")) \
        and isinstance(d.get("evidence"), dict) and d["id"] >= 1 and d["uncertainty_ns"] >= 0
    if not ok:
        raise ImportRefused(f"{folder}/samples.jsonl line {n}: not a time sample ({', '.join(SAMPLE_FIELDS)})")
    return {**{k: d.get(k) for k in SAMPLE_FIELDS if k != "id"}, "sample_id": d["id"],
            "evidence": json.dumps(d["evidence"], sort_keys=True)}


def _import_samples(store: Store, folder: Path, manifest: dict) -> list[dict]:
    """Store the export's time samples (kept as evidence with the device); returns them."""
    if "samples.jsonl" not in FORMATS[manifest["format"]]:
        return []
    samples = []
    with open(folder / "samples.jsonl", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                samples.append(_check_sample(json.loads(line), n, folder))
            except ValueError:
                raise ImportRefused(f"{folder}/samples.jsonl line {n}: not JSON") from None
    for i in range(0, len(samples), BATCH):
        store.store_samples(manifest["device"], manifest["log_id"], samples[i:i + BATCH])
    return samples


def _envelope(samples: list[dict], monoraw_ns: int) -> tuple[int, int] | None:
    """Where UTC can be at raw reading `monoraw_ns` of the samples' boot, by any clock rate up to MAX_RATE."""
    lo = hi = None
    rho = MAX_RATE_PPM * 1e-6
    for s in samples:
        m, half = s["monoraw_ns"], s["uncertainty_ns"]
        if s["sent_monoraw_ns"] is not None:  # the remote stamped between sending and receiving
            m, half = s["sent_monoraw_ns"] + (m - s["sent_monoraw_ns"]) // 2, half + (m - s["sent_monoraw_ns"] + 1) // 2
        d = monoraw_ns - m
        s_lo, s_hi = s["utc_ns"] - half + d - int(abs(d) * rho) - 1, s["utc_ns"] + half + d + int(abs(d) * rho) + 1
        lo, hi = (s_lo, s_hi) if lo is None else (max(lo, s_lo), min(hi, s_hi))
    return None if lo is None else (lo, hi)


def _ns(text: str | None) -> int | None:
    if not isinstance(text, str):
        return None
    import datetime as dt

    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(t.timestamp()) * 10**9 + t.microsecond * 1000


def _reanchor(store: Store, folder: Path, manifest: dict, samples: list[dict]) -> dict:
    """Give every exported punch the export's derived time (matched by hash), and check each interval against
    the samples' envelope: a disjoint one is a `time-mismatch` alarm (the punch's flags say so too)."""
    device, log_id = manifest["device"], manifest["log_id"]
    by_boot: dict[str, list[dict]] = {}
    for s in samples:
        if s["status"] == "accepted" and s["source"] not in UNTRUSTED_SOURCES:
            by_boot.setdefault(s["boot_id"], []).append(s)
    out = {"reanchored": 0, "time_mismatches": 0}
    rows, mismatches = [], []
    with open(folder / "punches.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            flags = [x for x in rec.get("flags") or [] if isinstance(x, str)]
            env = _envelope(by_boot.get(rec.get("boot_id"), []), rec.get("monoraw_ns") or 0) \
                if isinstance(rec.get("monoraw_ns"), int) else None
            lo, hi = _ns(rec.get("earliest")), _ns(rec.get("latest"))
            if env is not None and lo is not None and hi is not None and (hi < env[0] or lo > env[1]):
                flags.append("time-mismatch")
                mismatches.append(rec["seq"])
            rows.append((*(rec.get(k) if isinstance(rec.get(k), str) else None for k in DERIVED_TIME),
                         json.dumps(flags), device, log_id, rec["seq"], rec.get("hash")))
            _derived_hook(rec)
            if len(rows) >= BATCH:
                out["reanchored"] += _update_times(store, device, rows)
                rows = []
    out["reanchored"] += _update_times(store, device, rows)
    if mismatches:
        with store.transaction() as cur:
            for seq in mismatches:
                store.raise_alarm(cur, device, log_id, seq, "time-mismatch",
                                  "the exported time interval contradicts the export's own time samples", once=True)
    out["time_mismatches"] = len(mismatches)
    return out


def _update_times(store: Store, device: str, rows: list[tuple]) -> int:
    if not rows:
        return 0
    with store.transaction() as cur:
        store.executemany(cur, "UPDATE punches SET utc=?, earliest=?, latest=?, basis=?, flags=? "
                          "WHERE device_id=? AND log_id=? AND seq=? AND hash=?", rows)
        store.touch(cur, device)
    return len(rows)


def _derived_hook(rec: dict) -> None:
    """Kinds, lateness, local date and time are derived from the corrected time too (issue 15). The rules that
    compute them live in terminal/punch/rules.py, which the import rules keep out of sync/server, and the
    server has no schedule of its own: the server stores the terminal's derived values as delivered in each
    record (the push and the export carry the same fields). TODO(issue 15, derived kinds): once the records
    carry the derived kind/lateness beside the hashed fields, update them here with the times above; a
    server-side recomputation needs the schedule published with the roster and rules shared with sync/."""
