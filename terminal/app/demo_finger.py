"""The fingerprint part of `presensi demo`: an emulated sensor, the roster's templates synced into its
slots, and a few touches on the glass that go through the real driver, capture loop and punch path.

    from terminal.app.demo_finger import run_fingerprint_demo
    lines = run_fingerprint_demo(state_dir, punch_service_or_log, ["1985...", "1990..."], say=print)
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drivers.fingerprint.capture import CaptureLoop
from drivers.fingerprint.emulator import REALISTIC_LATENCY, FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
from drivers.fingerprint.registry import from_config
from terminal.config import Fingerprint
from terminal.finger.punch import FingerDecision, capture_handler
from terminal.finger.slots import SlotMap, sync_slots


def run_fingerprint_demo(state_dir: str | Path, sink, employees: list[str], *,
                         say: Callable[[str], None] = print, min_score: int = 50,
                         timeout: float = 60.0) -> list[FingerDecision]:
    """Each employee touches the sensor once, then an unknown finger does. Returns the decisions (fewer when
    one did not come within `timeout` seconds, which is said)."""
    people = [(emp, [synthetic_template(f"demo:{emp}")]) for emp in employees]
    with tempfile.TemporaryDirectory(prefix="presensi-finger-") as tmp, \
            FingerprintEmulator(Settings(capacity=162), link=Path(tmp) / "ttyFP", latency=REALISTIC_LATENCY) as emu, \
            SlotMap(state_dir) as slots:
        sensor = from_config(Fingerprint(model="zhiantec", port=emu.path))  # the field driver, on the pty
        info = sensor.info()
        say(f"fingerprint      emulated sensor on {emu.path}: capacity {info['capacity']}, baud {info['baud']}")
        report = sync_slots(sensor, slots, people)
        say(f"fingerprint      {len(report.added)} templates synced into sensor slots")
        decisions: list[FingerDecision] = []
        decided = threading.Event()

        def on_decision(decision: FingerDecision) -> None:
            decisions.append(decision)
            decided.set()

        loop = CaptureLoop(sensor, capture_handler(sink, slots, min_score, on_decision=on_decision))
        loop.start()
        try:
            for template in [t[0] for _, t in people] + [synthetic_template("demo:stranger")]:
                decided.clear()
                emu.place_finger(template, score=140)
                if not decided.wait(timeout):
                    say(f"fingerprint      no decision within {timeout:.0f} s")
                    break
                cycles = loop.cycles
                emu.remove_finger()
                # the next touch only once the loop has seen the finger lifted and looked again (a fixed
                # pause was too short on a busy machine: the next finger counted as the same touch)
                if not _until(lambda c=cycles: loop.cycles > c, timeout):
                    say(f"fingerprint      the lifted finger was not noticed within {timeout:.0f} s")
                    break
                d = decisions[-1]
                say(f"fingerprint      {d.reason:<12} slot {d.slot}  score {d.score}  {d.employee or ''}".rstrip())
        finally:
            loop.stop()
            sensor.close()
        return decisions


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
