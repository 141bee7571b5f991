"""Roster bundle cost: build (server), verify and install (terminal), load all templates, for rosters of
typical sizes (an OPD of 100–1,000 employees up to a whole regency of 10,000).

    python bench/roster_bench.py [--employees 1000,10000] [--templates 3]

Each employee has `--templates` face templates (128 floats) and two 512-byte fingerprint templates.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from sync.wire import rosterbundle  # noqa: E402
from terminal.punch import roster  # noqa: E402


def employees(n: int, templates: int) -> list[dict]:
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        t = rng.normal(size=(templates, 128))
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        out.append({"id": f"19800101{i:010d}", "name": f"Pegawai {i}", "uid": i + 1, "pin_allowed": i % 4 == 0,
                    "face_templates": t.tolist(), "finger_templates": [rng.bytes(512), rng.bytes(512)]})
    return out


def run(n: int, templates: int) -> dict:
    key = Ed25519PrivateKey.generate()
    emps = employees(n, templates)
    t0 = time.perf_counter()
    bundle = rosterbundle.build_bundle(key, 1, emps, {}, [])
    t1 = time.perf_counter()
    verified = rosterbundle.verify_bundle(bundle, key.public_key(), 0,
                                          rosterbundle.BundleLimits(max_employees=max(n, 10000)))
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        roster.install(tmp, version=1, employees=verified["employees"])
        t3 = time.perf_counter()
        with roster.Roster.open(tmp) as r:
            loaded = r.employees()
        t4 = time.perf_counter()
        size = (Path(tmp) / roster.DB_FILE).stat().st_size
    assert len(loaded) == n
    return {"employees": n, "face_templates": n * templates, "bundle_mb": round(len(bundle) / 1e6, 2),
            "roster_db_mb": round(size / 1e6, 2), "build_s": round(t1 - t0, 2), "verify_s": round(t2 - t1, 2),
            "install_s": round(t3 - t2, 2), "load_all_s": round(t4 - t3, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--employees", default="1000,10000")
    ap.add_argument("--templates", type=int, default=3)
    args = ap.parse_args()
    runs = [run(int(n), args.templates) for n in args.employees.split(",")]
    print(json.dumps({"bench": "roster", "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
