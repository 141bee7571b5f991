"""`[fingerprint] model = "emulator"`: the ZhianTec driver over an emulated module it starts itself.

For a terminal, a demo or a developer's laptop without a sensor, as gpiozero's mock pin factory is for
GPIO: nothing is faked above the wire. The emulator is a real pty (device.py) and the unmodified
pyfingerprint talks to it through the same driver a real module gets, so every path from capture to punch
is the one that runs in the field. `[fingerprint] port` is not used; baud, password and address configure
both sides. The emulator runs from construction until close(); `emulator` gives tests and the demo the
finger to put on the glass.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.fingerprint.emulator.device import FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings
from drivers.fingerprint.zhiantec import ZhianTecSensor


class EmulatedSensor(ZhianTecSensor):
    model = "emulator"
    uses_port = False

    def __init__(self, emulator: FingerprintEmulator, **options):
        self.emulator = emulator
        super().__init__(emulator.path, **options)

    @classmethod
    def from_settings(cls, settings, *, on_health: Callable[[dict], None] | None = None,
                      **overrides) -> EmulatedSensor:
        options = {"baud": settings.baud, "address": settings.address, "password": settings.password,
                   "reply_timeout": settings.reply_timeout, **overrides}
        options.pop("port", None)  # the emulator's pty is the port
        emulator = FingerprintEmulator(Settings(baud=options["baud"], address=options["address"],
                                                password=options["password"]))
        emulator.start()
        return cls(emulator, **options, on_health=on_health)

    def close(self) -> None:
        super().close()
        self.emulator.stop()
