"""The emulator run on its own: `python -m drivers.fingerprint.emulator` (or `presensi finger emulator`).

Prints the device path to give pyfingerprint or `presensi finger info --port PATH`, then takes commands on
stdin so a person can put a finger on the glass or break the line while the software runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from drivers.fingerprint.emulator.device import FAULTS, REALISTIC_LATENCY, FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template

HELP = """commands:
  finger SLOT [SCORE]   put the finger enrolled in SLOT on the glass (match score, default 120)
  template SEED         put the finger of synthetic_template(SEED) on the glass
  unknown               put an unknown finger on the glass
  lift                  take the finger away
  fault NAME [COUNT]    switch a line fault on (for COUNT replies, default until cleared)
  clear [NAME]          clear one fault or all
  power                 power-cycle the module (applies SetSysPara, ends a hang)
  status                settings, templates, faults
  quit
faults: """ + ", ".join(f"{k} ({v})" for k, v in FAULTS.items())


def build_parser(prog: str = "python -m drivers.fingerprint.emulator") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Emulated ZhianTec fingerprint sensor on a pty.")
    add_arguments(ap)
    return ap


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--link", metavar="PATH", help="also make PATH a symlink to the pty (stable across replug)")
    ap.add_argument("--capacity", type=int, default=1000, help="template slots (162, 200, 1000, ...)")
    ap.add_argument("--packet-size", type=int, default=128, choices=[32, 64, 128, 256])
    ap.add_argument("--security-level", type=int, default=3, choices=range(1, 6))
    ap.add_argument("--password", type=lambda s: int(s, 0), default=0)
    ap.add_argument("--address", type=lambda s: int(s, 0), default=0xFFFFFFFF)
    ap.add_argument("--baud", type=int, default=57600)
    ap.add_argument("--no-pacing", action="store_true", help="send as fast as the pty allows")
    ap.add_argument("--realistic-latency", action="store_true", help="capture/search take as long as a module's")
    ap.add_argument("--enrolled", type=int, default=0, metavar="N",
                    help="fill slots 0..N-1 with synthetic_template(slot)")
    ap.add_argument("--packet-log", metavar="FILE", help="append every packet (<<< in, >>> out) to FILE")


def make_emulator(args: argparse.Namespace) -> FingerprintEmulator:
    settings = Settings(capacity=args.capacity, packet_size=args.packet_size,
                        security_level=args.security_level, password=args.password, address=args.address,
                        baud=args.baud)
    emu = FingerprintEmulator(settings, link=args.link, paced=not args.no_pacing,
                              latency=REALISTIC_LATENCY if args.realistic_latency else None,
                              log_path=args.packet_log)
    for slot in range(min(args.enrolled, args.capacity)):
        emu.sim.store(slot, synthetic_template(slot))
    return emu


def run_command(emu: FingerprintEmulator, line: str) -> str | None:
    """One console line → the text to print; None means quit."""
    words = line.split()
    if not words:
        return ""
    cmd, rest = words[0], words[1:]
    if cmd == "quit":
        return None
    if cmd == "finger" and rest:
        slot = int(rest[0])
        template = emu.sim.library.get(slot)
        if template is None:
            return f"slot {slot} is empty"
        emu.place_finger(template, int(rest[1]) if len(rest) > 1 else 120)
        return f"finger of slot {slot} on the glass"
    if cmd == "template" and rest:
        emu.place_finger(synthetic_template(rest[0]))
        return f"finger synthetic_template({rest[0]}) on the glass"
    simple = {"unknown": emu.place_unknown_finger, "lift": emu.remove_finger, "power": emu.power_cycle}
    if cmd in simple:
        simple[cmd]()
        return "ok"
    if cmd == "fault" and rest:
        emu.set_fault(rest[0], int(rest[1]) if len(rest) > 1 else None)
        return f"fault {rest[0]} on"
    if cmd == "clear":
        emu.clear_fault(rest[0] if rest else None)
        return "cleared"
    if cmd == "status":
        s = emu.sim.settings
        return (f"path {emu.path}  capacity {s.capacity}  templates {len(emu.sim.library)}  packet {s.packet_size}"
                f"  security {s.security_level}  baud {s.baud}  faults {emu.faults or 'none'}")
    return HELP


def serve(emu: FingerprintEmulator, stdin=None) -> int:
    stop = threading.Event()

    def terminate(*_):
        raise SystemExit(0)  # interrupts a blocked stdin read as well; `finally` unplugs the pty

    signal.signal(signal.SIGTERM, terminate)
    emu.start()
    print(emu.path, flush=True)
    print(f"# emulated ZhianTec sensor: use --port {emu.path}; type 'help' for commands", file=sys.stderr)
    stdin = stdin or sys.stdin
    try:
        for line in stdin:
            try:
                out = run_command(emu, line)
            except ValueError as e:
                out = f"error: {e}"
            if out is None:
                break
            print(out, flush=True)
        else:
            stop.wait()  # stdin at its end (e.g. started by a service): run until SIGTERM/SIGINT
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return serve(make_emulator(args))
