"""Which class serves `[time] rtc`: the one place an RTC model is registered ("off" means none)."""

from __future__ import annotations

from drivers.rtc.base import Rtc, RtcError
from drivers.rtc.fake import FakeRtc
from drivers.rtc.kernel import KernelRtc

MODELS: dict[str, type[Rtc]] = {"kernel": KernelRtc, "fake": FakeRtc}


def open_rtc(model: str, path: str, device: str) -> Rtc:
    try:
        return MODELS[model](path, device)
    except KeyError:
        raise RtcError(f"[time] rtc = {model!r} is not a known RTC model; use off, {', '.join(MODELS)}") from None
