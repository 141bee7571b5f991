"""Which fingerprint sensor class serves `[fingerprint] model`: the one place a new model is registered.

    from drivers.fingerprint.registry import from_config
    sensor = from_config(cfg.fingerprint, on_health=...)   # a base.FingerprintSensor

Callers never import a concrete class; they get one from here, as gpiozero hands out pin factories by name.
To add a sensor of another protocol: implement base.FingerprintSensor in a module of its own beside
zhiantec.py (with an emulator or fake beside it for the tests) and add it to MODELS.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.fingerprint.base import FingerprintSensor, SensorError
from drivers.fingerprint.emulator.sensor import EmulatedSensor
from drivers.fingerprint.zhiantec import ZhianTecSensor

DEFAULT_MODEL = "zhiantec"

MODELS: dict[str, type[FingerprintSensor]] = {
    "zhiantec": ZhianTecSensor,  # ZhianTec/GROW R30x, R503, AS608, ZFM-20 on a UART
    "emulator": EmulatedSensor,  # the same driver over an emulated module on a pty (no hardware)
}


class UnknownModel(SensorError):
    """`[fingerprint] model` names no registered sensor."""

    def __init__(self, name: str):
        super().__init__(f"[fingerprint] model = {name!r} is not a known fingerprint sensor model; "
                         f"use one of: {', '.join(sorted(MODELS))}", "config")
        self.name = name


def model_class(name: str) -> type[FingerprintSensor]:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise UnknownModel(name) from None


def from_config(settings, *, on_health: Callable[[dict], None] | None = None, **overrides) -> FingerprintSensor:
    """The sensor for a `[fingerprint]` section (any object with its keys as attributes). `overrides`
    replace single settings (the CLI's --port, --baud) or pass driver options (e.g. call_deadline)."""
    return model_class(settings.model).from_settings(settings, on_health=on_health, **overrides)
