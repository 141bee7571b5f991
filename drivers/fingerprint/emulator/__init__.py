"""An emulated ZhianTec sensor on a real pseudo-terminal, for tests, the demo and trying without hardware.

The driver under test talks to it through the unmodified pyfingerprint exactly as to a module on a UART:
    protocol.py    the packet format (shared with tests)
    sensorsim.py   the module's logic: a state machine, packet in -> reply bytes out, no I/O
    device.py      that state machine on a pty: byte pacing, latency, line faults, unplugging, packet log
    console.py     the stand-alone program (`python -m drivers.fingerprint.emulator`, `presensi finger emulator`)
    sensor.py      the registry's "emulator" model: the ZhianTec driver over an emulator it starts itself

The names most callers want are importable from here.
"""

from drivers.fingerprint.emulator.device import FAULTS, REALISTIC_LATENCY, FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template

__all__ = ["FAULTS", "REALISTIC_LATENCY", "FingerprintEmulator", "Settings", "synthetic_template"]
