"""The Raspberry Pi's face budget: how long one face decision takes and how much CPU it costs, with each
detector the terminal offers ([face] detector = "hog" or "yunet", at two detection widths), compute-bound on
one core, beside the `face_recognition` package (what a user would pick instead) when it is installed.
Prints JSON; docs/install-pi.md chooses the Pi's default from it.

    python bench/pi_budget.py [--decisions 4] [--identities 4] [--quick]

Run it natively and inside the arm64 root under qemu-user (scripts/arm64-ci.sh builds one):
    sudo bash scripts/arm64-ci.sh run bash -c \
        'cd /usr/src/presensi-edge && /opt/presensi/venv/bin/python bench/pi_budget.py --decisions 2 --identities 2'

A decision here is what the kiosk waits for: an employee steps in front of an empty scene and the pipeline
(detect, quality gate, align, embed, gallery, consensus over [face] frames_required frames) decides. Frames
are fed as fast as they are processed, with 15 fps time stamps, so the wall time is the compute a decision
needs on this machine (a real camera only adds the wait for its next frame). Liveness is off: its cost is
bench/liveness_bench.py's subject.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from terminal.face import detect, embed, evaluation, gallery, pipeline, quality, stills  # noqa: E402

# The photos and the scene as tests/face_support.py makes them; repeated here because this bench also runs in
# the arm64 root, which has the project's runtime but not the test tools that module needs (pytest).
SHARED = ROOT.parent / "shared"
LFW = SHARED / "data" / "faces" / "lfw-dev"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"


def lfw(identity: str, n: int) -> Path:
    return LFW / identity / f"{identity}_{n:04d}.jpg"


def background(i: int = 0, size=(480, 640)) -> np.ndarray:
    """A static office-like background with a little sensor noise per frame."""
    h, w = size
    base = np.tile(np.linspace(90, 150, w, dtype=np.float32), (h, 1))
    noise = np.random.default_rng(i).normal(0, 1.5, (h, w)).astype(np.float32)
    return np.clip(np.dstack([base, base * 0.95, base * 0.9]) + noise[..., None], 0, 255).astype(np.uint8)


def frame_with(photo: Path, i: int, scale: float = 1.6, size=(480, 640)) -> np.ndarray:
    """The photo pasted in the middle of a 640x480 frame, moved a few pixels per frame."""
    frame = background(i, size)
    img = cv2.resize(cv2.imread(str(photo)), None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    ph, pw = img.shape[:2]
    dx, dy = (i % 5) - 2, ((i // 2) % 5) - 2
    y0, x0 = (size[0] - ph) // 2 + dy, (size[1] - pw) // 2 + dx
    frame[y0:y0 + ph, x0:x0 + pw] = img
    return frame

FPS = 15.0
EMPTY_FRAMES = 3
MAX_FACE_FRAMES = 30


def machine() -> dict:
    """What this ran on, including whether the CPU is emulated (qemu-user reports the host's cpuinfo)."""
    info = {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for key in ("model name", "model\t", "hardware")
                      for ln in lines if ln.lower().startswith(key)), None)
    except OSError:
        model = None
    info["cpu_model"] = model
    # arm64 code on an Intel or AMD CPU can only be qemu-user (scripts/arm64-ci.sh run …)
    x86_cpu = bool(model) and any(vendor in model for vendor in ("Intel", "AMD"))
    info["emulated"] = platform.machine() == "aarch64" and x86_cpu
    return info


def people(n: int) -> list[str]:
    """n LFW identities with at least 4 photos: photos 1-2 enrol, photo 3 walks up to the terminal."""
    counts: dict[str, int] = {}
    for _, ident in evaluation.read_manifest(LFW):
        counts[ident] = counts.get(ident, 0) + 1
    return sorted(i for i, c in counts.items() if c >= 4)[:n]


def enrol(ids: list[str], det) -> gallery.Gallery:
    return gallery.Gallery({i: [stills.analyse(stills.read_image(lfw(i, n)), det)[0].embedding for n in (1, 2)]
                            for i in ids})


def one_decision(det, gal: gallery.Gallery, ident: str, k: int) -> dict:
    """An empty scene, then `ident` in view until the pipeline decides; wall and CPU time of the face part."""
    pl = pipeline.FacePipeline(det, gal, gallery.Rule(), quality.QualityLimits(), pipeline.PipelineSettings(),
                               pool=embed.EmbeddingPool(1))
    try:
        for n in range(EMPTY_FRAMES):
            pl.process(background(k * 100 + n), n / FPS, wait=True)
        t0, c0, decided, frames = time.perf_counter(), time.process_time(), None, 0
        for n in range(MAX_FACE_FRAMES):
            frames += 1
            out = pl.process(frame_with(lfw(ident, 3), k * 100 + n), (EMPTY_FRAMES + n) / FPS, wait=True)
            if out:
                decided = out[0]
                break
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        pl.close()
    return {"ms": round(1000 * wall, 1), "cpu_ms": round(1000 * cpu, 1), "frames_fed": frames,
            "decided": decided is not None, "correct": bool(decided and decided.accepted and decided.employee == ident),
            "frames_embedded": decided.frames if decided else None}


def stage_costs(det, ids: list[str]) -> dict:
    """Median cost of the two expensive stages alone: detecting in one 640x480 frame, embedding one face."""
    frames = [frame_with(lfw(i, 3), k) for k, i in enumerate(ids)]
    detect_cpu, embed_cpu = [], []
    for frame in frames:
        c0 = time.process_time()
        faces = det.detect(frame)
        detect_cpu.append(1000 * (time.process_time() - c0))
        if faces:
            _, chip = embed.align(embed.to_rgb(frame), max(faces, key=lambda f: f.box[2] * f.box[3]))
            c0 = time.process_time()
            embed.embed_chip(chip)
            embed_cpu.append(1000 * (time.process_time() - c0))
    # CPU time, not wall time: on a shared or emulating machine it is what the stage itself costs
    return {"detect_cpu_ms_per_frame": round(statistics.median(detect_cpu), 1),
            "embed_cpu_ms_per_face": round(statistics.median(embed_cpu), 1) if embed_cpu else None}


def variant(name: str, det, ids: list[str], decisions: int) -> dict:
    gal = enrol(ids, det)
    runs = [one_decision(det, gal, ids[k % len(ids)], k) for k in range(decisions)]
    ms = [r["ms"] for r in runs if r["decided"]]
    cpu = [r["cpu_ms"] for r in runs if r["decided"]]
    return {"detector": name, **stage_costs(det, ids), "decisions": len(runs),
            "decided": len(ms), "correct": sum(r["correct"] for r in runs),
            "decision_ms_median": round(statistics.median(ms), 1) if ms else None,
            "decision_ms_max": max(ms) if ms else None,
            "cpu_ms_per_decision_median": round(statistics.median(cpu), 1) if cpu else None, "runs": runs}


def face_recognition_baseline(ids: list[str], frames_per_decision: int) -> dict:
    """face_recognition 1.3.0 (HOG face_locations + face_encodings) on the same frames, as many frames as our
    consensus embeds per decision; reported as missing where it is not installed (the arm64 root)."""
    try:
        import face_recognition
    except ModuleNotFoundError:
        return {"missing": "face_recognition is not installed (pip install --no-deps face_recognition==1.3.0)"}
    ms, cpu = [], []
    for k, ident in enumerate(ids):
        t0, c0 = time.perf_counter(), time.process_time()
        for n in range(frames_per_decision):
            rgb = frame_with(lfw(ident, 3), k * 100 + n)[:, :, ::-1].copy()
            face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb))
        ms.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
    return {"frames_per_decision": frames_per_decision, "decision_ms_median": round(statistics.median(ms), 1),
            "cpu_ms_per_decision_median": round(statistics.median(cpu), 1)}


def recommend(variants: dict) -> dict:
    """The cheapest detector that decided every run correctly: the Pi's default."""
    sound = {k: v for k, v in variants.items() if v["decided"] == v["decisions"] and v["correct"] == v["decisions"]}
    if not sound:
        return {"detector": None, "why": "no variant decided every run correctly"}
    best = min(sound, key=lambda k: sound[k]["cpu_ms_per_decision_median"])
    return {"variant": best, "cpu_ms_per_decision": sound[best]["cpu_ms_per_decision_median"],
            "decision_ms": sound[best]["decision_ms_median"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=4, help="decisions per detector variant")
    ap.add_argument("--identities", type=int, default=4, help="enrolled employees")
    ap.add_argument("--quick", action="store_true", help="HOG and YuNet at 320 px only (slow emulated runs)")
    args = ap.parse_args()
    if not LFW.is_dir():
        print(json.dumps({"error": f"{LFW} not found: the shared test photos lie beside the repository"}))
        return 2
    start = time.perf_counter()
    embed.warm()
    ids = people(args.identities)
    detectors = {"hog_320": lambda: detect.HogDetector(320)}
    if not args.quick:
        detectors["hog_640"] = lambda: detect.HogDetector(640)
    if YUNET.is_file():
        detectors["yunet_320"] = lambda: detect.YuNetDetector(str(YUNET), 320)
        if not args.quick:
            detectors["yunet_640"] = lambda: detect.YuNetDetector(str(YUNET), 640)
    out = {"machine": machine(), "frame_size": [640, 480], "enrolled": len(ids), "variants": {},
           "frames_required": pipeline.PipelineSettings().frames_required}
    for name, make in detectors.items():
        out["variants"][name] = variant(name, make(), ids, args.decisions)
    if not YUNET.is_file():
        out["yunet_missing"] = f"{YUNET} not found"
    out["face_recognition_1.3.0"] = face_recognition_baseline(ids, out["frames_required"])
    out["recommended"] = recommend(out["variants"])
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
