"""Fingerprint benchmarks on the pty emulator, paced at the sensor's real baud rate; prints JSON.

1. Finger on the glass → decision (punch committed): the driver's capture loop with the real punch log,
   against a bare pyfingerprint loop (readImage until a finger, convertImage, searchTemplate) that a user
   would write from the library's example — the floor our driver adds its checks on top of.
2. Full-roster slot sync (default 1000 templates) at 57600 baud, paced like the wire, and unpaced.

    python bench/fingerprint_bench.py [--templates 1000] [--touches 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyfingerprint.pyfingerprint import PyFingerprint  # noqa: E402

from drivers.fingerprint.capture import CaptureLoop  # noqa: E402
from drivers.fingerprint.emulator import REALISTIC_LATENCY, FingerprintEmulator  # noqa: E402
from drivers.fingerprint.emulator.sensorsim import INSTRUCTION_NAMES, Settings, synthetic_template  # noqa: E402
from drivers.fingerprint.registry import from_config  # noqa: E402
from terminal.config import Fingerprint  # noqa: E402
from terminal.finger.punch import capture_handler  # noqa: E402
from terminal.finger.slots import SlotMap, sync_slots  # noqa: E402
from terminal.log import punchlog  # noqa: E402


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"n": len(samples), "median_s": round(statistics.median(ordered), 3),
            "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 3), "max_s": round(ordered[-1], 3)}


def roster(n: int) -> list[tuple[str, list[bytes]]]:
    return [(f"EMP{i:05d}", [synthetic_template(f"EMP{i:05d}")]) for i in range(n)]


def bench_decision(tmp: Path, touches: int, library: int) -> dict:
    people = roster(library)
    with FingerprintEmulator(Settings(capacity=1000), link=tmp / "fp", paced=True,
                             latency=REALISTIC_LATENCY) as emu:
        state = tmp / "state"
        state.mkdir()
        punchlog.init(state)
        with punchlog.PunchLog(state) as log, SlotMap(state) as slots:
            emu.paced = False
            sync_slots(from_config(Fingerprint(port=emu.path)), slots, people)
            emu.paced = True
            decided = threading.Event()
            loop = CaptureLoop(from_config(Fingerprint(port=emu.path)),
                               capture_handler(log, slots, 50, on_decision=lambda d: decided.set()))
            loop.start()
            ours = []
            for i in range(touches):
                time.sleep(0.3)
                decided.clear()
                start = time.monotonic()
                emu.place_finger(people[(i * 97) % library][1][0], score=150)
                if decided.wait(10):
                    ours.append(time.monotonic() - start)
                emu.remove_finger()
            loop.stop()
            punches = log.count()
        bare = bench_bare_pyfingerprint(people, touches)
    return {"driver_capture_loop_to_committed_punch": summary(ours), "punches": punches,
            "bare_pyfingerprint_loop_to_search_result": summary(bare), "library_templates": library,
            "latency_model_s": {INSTRUCTION_NAMES[k]: v for k, v in sorted(REALISTIC_LATENCY.items())}}


def bench_bare_pyfingerprint(people, touches: int) -> list[float]:
    out = []
    with FingerprintEmulator(Settings(capacity=1000), paced=True, latency=REALISTIC_LATENCY) as emu2:
        for slot, (_, templates) in enumerate(people):
            emu2.sim.store(slot, templates[0])
        f = PyFingerprint(emu2.path, 57600, 0xFFFFFFFF, 0)
        for i in range(touches):
            result = {}

            def place(i=i, result=result):
                time.sleep(0.3)
                result["t"] = time.monotonic()
                emu2.place_finger(people[(i * 97) % len(people)][1][0], score=150)

            threading.Thread(target=place).start()
            while not f.readImage():
                pass
            f.convertImage(0x01)
            f.searchTemplate()
            out.append(time.monotonic() - result["t"])
            emu2.remove_finger()
    return out


def bench_sync(tmp: Path, templates: int, paced: bool) -> dict:
    with FingerprintEmulator(Settings(capacity=max(templates, 162)), link=tmp / f"sync{paced}", paced=paced) as emu:
        with SlotMap(tmp / f"map{paced}") as slots:
            sensor = from_config(Fingerprint(port=emu.path))
            started, cpu = time.monotonic(), time.process_time()
            report = sync_slots(sensor, slots, roster(templates))
            wall = time.monotonic() - started
    return {"templates": templates, "paced_57600": paced, "seconds": round(wall, 1),
            "per_template_ms": round(1000 * wall / templates, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            "added": len(report.added)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", type=int, default=1000)
    ap.add_argument("--touches", type=int, default=10)
    ap.add_argument("--library", type=int, default=1000, help="templates in the sensor during the decision bench")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = {"benchmark": "fingerprint", "baud": 57600,
               "finger_on_glass_to_decision": bench_decision(tmp, args.touches, args.library)}
        for paced in (False, True):
            (tmp / f"map{paced}").mkdir(exist_ok=True)
            out[f"full_roster_sync_{'paced' if paced else 'unpaced'}"] = bench_sync(tmp, args.templates, paced)
        out["wire_estimate_s_per_template"] = round((12 + 12 + 4 * 139) * 2 * 10 / 57600, 3)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
