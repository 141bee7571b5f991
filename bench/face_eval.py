"""Open-set 1:N evaluation on ../shared/data/faces/lfw-dev: our pipeline over a table of operating points,
and the `face_recognition` package at its default tolerance (0.6) on the same split. Prints JSON.

    python bench/face_eval.py [--cache DIR] [--no-baseline] [--no-multi]

The split and the metrics are in terminal/face/evaluation.py. Embeddings are cached in --cache (they take
a few minutes on two cores); delete the cache after changing the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from terminal.face import evaluation  # noqa: E402
from terminal.face.detect import HogDetector  # noqa: E402
from terminal.face.gallery import Rule  # noqa: E402

LFW = ROOT.parent / "shared" / "data" / "faces" / "lfw-dev"
THRESHOLDS = (0.40, 0.45, 0.48, 0.50, 0.51, 0.52, 0.55, 0.60)
MARGINS = (0.0, 0.04, 0.08, 0.09, 0.12)


def baseline_samples(rows, cache: Path) -> list[evaluation.Sample]:
    """face_recognition's own path: face_locations (HOG, upsample 1) + face_encodings, first face."""
    import face_recognition

    cache_file = cache / "lfw-face_recognition-1.3.0.npz"
    if cache_file.exists():
        emb = np.load(cache_file)["emb"]
    else:
        emb = []
        for rel, _ in rows:
            image = face_recognition.load_image_file(LFW / rel)
            enc = face_recognition.face_encodings(image)
            emb.append(enc[0] if enc else np.full(128, np.nan))
        emb = np.array(emb, dtype=np.float32)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, emb=emb)
    return [evaluation.Sample(rel, ident, None if np.isnan(e).any() else e)
            for (rel, ident), e in zip(rows, emb, strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/presensi-face-cache"))
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-multi", action="store_true", help="skip the augmented multi-frame probes")
    ap.add_argument("--top-k", type=int, nargs="*", default=[1, 2])
    args = ap.parse_args()
    if not LFW.is_dir():
        print(json.dumps({"error": f"{LFW} not found; the shared data folder must sit beside the repo"}))
        return 2
    rows = evaluation.read_manifest(LFW)
    t0 = time.perf_counter()
    samples = evaluation.embed_samples(LFW, HogDetector(), rows, not args.no_multi, args.cache)
    out = {"dataset": str(LFW), "images": len(rows), "identities": len({i for _, i in rows}),
           "embed_seconds": round(time.perf_counter() - t0, 1), "folds": 3, "ours": []}
    for top_k in args.top_k:
        for thr in THRESHOLDS:
            for margin in MARGINS:
                rule = Rule(threshold=thr, margin=margin, top_k=top_k)
                row = {"top_k": top_k, "threshold": thr, "margin": margin,
                       "single": evaluation.evaluate(samples, rule)}
                if not args.no_multi:
                    row["multi_frame"] = evaluation.evaluate(samples, rule, multi=True)
                out["ours"].append(row)
    if not args.no_baseline:
        base = baseline_samples(rows, args.cache)
        out["face_recognition_tolerance_0.6"] = evaluation.evaluate(base, Rule(threshold=0.6, margin=0.0, top_k=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
