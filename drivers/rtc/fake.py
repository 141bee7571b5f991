"""A fake RTC: a directory shaped like /sys/class/rtc/rtc0 whose time ticks with the host clock.

`fake.json` in the directory holds the one thing that makes it a particular RTC: `offset_s`, how far it runs
ahead of the host clock. Each read rewrites since_epoch, date and time from host time + offset and parses them
with the kernel driver's sysfs parser, so tests exercise the same parsing as a real board. `set()` stores a
new offset (as setting a real RTC would), unless `fake.json` says `"settable": false` (a daemon without
CAP_SYS_TIME). A dead battery is an offset that makes it read 2000-01-01 (see make()).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from drivers.rtc.base import Rtc, RtcError, RtcPermissionError
from drivers.rtc.kernel import parse_sysfs

DEAD_BATTERY_EPOCH = 946684800  # 2000-01-01T00:00:00Z: where many RTC chips restart without power


def make(path: str | Path, *, offset_s: float = 0.0, reads: int | None = None, settable: bool = True) -> Path:
    """Create (or reset) a fake RTC directory; `reads` = the epoch second it reads now (e.g. 2000-01-01)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if reads is not None:
        offset_s = reads - time.time()
    (path / "fake.json").write_text(json.dumps({"offset_s": offset_s, "settable": settable}))
    (path / "name").write_text("fake-rtc\n")
    FakeRtc(str(path), "").read()
    return path


class FakeRtc(Rtc):
    model = "fake"

    def _state(self) -> dict:
        try:
            return json.loads((Path(self.path) / "fake.json").read_text())
        except (OSError, ValueError) as e:
            raise RtcError(f"{self.path}: not a fake RTC directory ({e})") from None

    def read(self) -> int:
        now = int(time.time() + float(self._state().get("offset_s", 0.0)))
        stamp = dt.datetime.fromtimestamp(now, dt.UTC)
        path = Path(self.path)
        (path / "since_epoch").write_text(f"{now}\n")
        (path / "date").write_text(stamp.strftime("%Y-%m-%d\n"))
        (path / "time").write_text(stamp.strftime("%H:%M:%S\n"))
        return parse_sysfs(path)

    def set(self, epoch_s: int) -> None:
        state = self._state()
        if not state.get("settable", True):
            raise RtcPermissionError(f"{self.path}: setting the RTC needs CAP_SYS_TIME (fake: not settable)")
        # a real chip restarts its second at the write: it reads epoch_s from now for one whole second
        state["offset_s"] = int(epoch_s) - time.time()
        (Path(self.path) / "fake.json").write_text(json.dumps(state))
