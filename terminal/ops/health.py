"""Self-tests of every part, as plain functions, and the monitor that turns them into faults.

Each check returns a CheckResult with a level: "ok", "warning", "fault" or "skipped" (the part is absent
or not configured, which is neither healthy nor broken). `HealthMonitor.tick()` runs all checks, raises a
fault (deduplicated, with diagnostics) for each part at warning or fault level and clears it when the
part recovers. The daemon calls tick() every `[health] interval` seconds; drivers contribute through
`providers`: name -> callable returning a dict {"ok": bool, "error" or "message": str, ...diagnostics}.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from terminal.log import syncstate
from terminal.ops import faults, fscheck
from terminal.timing import timeline

log = logging.getLogger(__name__)

LEVELS = ("ok", "warning", "fault", "skipped")
THERMAL_GLOB = "/sys/class/thermal/thermal_zone*"
THROTTLED_SYSFS = "/sys/devices/platform/soc/soc:firmware/get_throttled"
# vcgencmd get_throttled bits (Raspberry Pi documentation, "vcgencmd").
THROTTLE_BITS = {0: "under-voltage detected", 1: "arm frequency capped", 2: "currently throttled",
                 3: "soft temperature limit active", 16: "under-voltage has occurred",
                 17: "arm frequency capping has occurred", 18: "throttling has occurred",
                 19: "soft temperature limit has occurred"}
PROVIDER_CATEGORIES = {"camera": "camera", "fingerprint": "fingerprint", "gpio": "gpio", "screen": "screen"}


@dataclass(frozen=True)
class CheckResult:
    part: str
    level: str
    category: str
    message: str
    diagnostics: dict = field(default_factory=dict)
    screen: str = ""  # what the admin screen says, in Bahasa Indonesia (the message is IT staff's detail)

    @property
    def ok(self) -> bool:
        return self.level in ("ok", "skipped")

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


# -- the checks ------------------------------------------------------------------------------------------


def check_disk(state_dir: Path, warn_mb: float, critical_mb: float) -> CheckResult:
    """Free space where punches and photos are written; warns long before ENOSPC refuses a punch."""
    usage = shutil.disk_usage(state_dir)
    free_mb = usage.free / 1e6
    diag = {"path": str(state_dir), "free_mb": round(free_mb, 1), "total_mb": round(usage.total / 1e6, 1),
            "warn_mb": warn_mb, "critical_mb": critical_mb}
    if free_mb < critical_mb:
        return CheckResult("disk", "fault", "disk", f"disk almost full: {free_mb:.0f} MB free in {state_dir}; "
                           "punches will be refused when it is full. Delete old photos/logs or replace the "
                           "SD card", diag)
    if free_mb < warn_mb:
        return CheckResult("disk", "warning", "disk", f"disk space low: {free_mb:.0f} MB free in {state_dir} "
                           f"(warning below {warn_mb:.0f} MB); free space before punches are refused", diag)
    return CheckResult("disk", "ok", "disk", f"{free_mb:.0f} MB free", diag)


FS_SCREEN = ("Penyimpanan (kartu SD) bermasalah: sistem berkas mencatat galat. Hubungi Diskominfo: salin data "
             "presensi (presensi export), periksa kartu dengan fsck, atau ganti kartu SD.")
FS_READONLY_SCREEN = ("Penyimpanan hanya-baca: presensi tidak dapat disimpan. Hubungi Diskominfo: salin data, "
                      "periksa kartu SD dengan fsck, lalu nyalakan ulang.")
FSCK_HINT = ("copy the punches off first (presensi export --to DIR), then check the partition with e2fsck "
             "(the root: fsck.mode=force in cmdline.txt for one boot), which clears the counter; replace the SD "
             "card if errors come back (docs/install-pi.md, \"After a power cut\")")


def check_filesystem(paths: list, kernel_log: str) -> CheckResult:
    """ext4 error counters, a read-only remount and kernel I/O errors for the file systems in `paths`."""
    report = fscheck.inspect(paths, kernel_log)
    problems = [p for info in report["filesystems"] for p in _fs_problems(info)]
    if report["io_errors"]:
        problems.append(f"{report['io_error_count']} I/O error line(s) in the kernel log, the last: "
                        f"{report['io_errors'][-1][:160]!r}")
    if problems:
        readonly = any(info["read_only"] for info in report["filesystems"] if info["path"] == str(paths[0]))
        return CheckResult("filesystem", "fault", "disk", f"file system errors: {'; '.join(problems)}. {FSCK_HINT}",
                           report, FS_READONLY_SCREEN if readonly else FS_SCREEN)
    if report["kernel_log_error"]:
        return CheckResult("filesystem", "warning", "disk", "no ext4 errors, but the kernel log cannot be read "
                           f"({report['kernel_log_error']}): SD card I/O errors would go unseen; add the presensi "
                           "user to the systemd-journal group or set [health] kernel_log", report)
    checked = ", ".join(f"{i['device'] or i['path']}" for i in report["filesystems"]) or "nothing"
    return CheckResult("filesystem", "ok", "disk", f"no file system errors ({checked})", report)


def _fs_problems(info: dict) -> list[str]:
    where = f"{info['device']} ({info['path']})"
    found = []
    if info.get("errors_count"):
        first = _utc(info.get("first_error_time"))
        found.append(f"{where}: ext4 counted {info['errors_count']} error(s) since the last e2fsck, the first at "
                     f"{first} in {info.get('first_error_func') or '?'}")
    if info["read_only"] and info["path"] != "/":  # the OS root may be read-only on purpose (overlay)
        found.append(f"{where}: mounted read-only (the kernel remounts a damaged ext4 read-only)")
    return found


def _utc(epoch) -> str:
    import datetime as dt

    if not isinstance(epoch, int) or epoch <= 0:
        return "an unknown time"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_database(conn: sqlite3.Connection) -> CheckResult:
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as e:
        return CheckResult("database", "fault", "database", f"the punch database cannot be checked: {e}",
                           {"error": str(e)})
    if rows != ["ok"]:
        return CheckResult("database", "fault", "database", "the punch database is damaged (quick_check); "
                           "see `presensi log verify` and the recovery steps it prints", {"quick_check": rows[:5]})
    return CheckResult("database", "ok", "database", "quick_check ok")


def check_clock(conn: sqlite3.Connection, max_uncertainty_s: float) -> CheckResult:
    """The corrected time's state from terminal.timing.timeline."""
    try:
        now = timeline.now(conn)
    except Exception as e:  # the time service's own bug must show as a clock fault, not stop the checks
        return CheckResult("clock", "fault", "clock", f"the corrected time cannot be computed: {e}",
                           {"error": f"{type(e).__name__}: {e}"})
    diag = {k: now.get(k) for k in ("utc", "earliest", "latest", "basis", "verified", "state", "flags",
                                    "wall_clock", "wall_clock_error_s")}
    width = _interval_seconds(now.get("earliest"), now.get("latest"))
    diag["uncertainty_s"] = width
    if now.get("state") == "implausible":
        return CheckResult("clock", "fault", "clock", "the Pi's clock is implausible and no trusted time sample "
                           "exists yet; punches are kept and re-anchored once the central server is reached "
                           "(check the network; fit an RTC battery)", diag)
    if not now.get("verified"):
        return CheckResult("clock", "warning", "clock", "time not verified by a trusted source "
                           f"(basis {now.get('basis')}); punches are kept and re-anchored later", diag)
    if width is not None and width > max_uncertainty_s:
        return CheckResult("clock", "warning", "clock", f"time uncertain by ±{width / 2:.0f} s "
                           f"(basis {now.get('basis')})", diag)
    return CheckResult("clock", "ok", "clock", f"verified ({now.get('basis')})", diag)


def _interval_seconds(earliest: str | None, latest: str | None) -> float | None:
    import datetime as dt

    if not earliest or not latest:
        return None
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(latest) - parse(earliest)).total_seconds()


def check_sync(conn: sqlite3.Connection, target: str | None, log_id: str, lag_minutes: float,
               now_ns: int | None = None) -> CheckResult:
    """How long punches have waited for the central server (skipped without a server or sync state)."""
    if target is None:
        return CheckResult("sync", "skipped", "sync", "no central server configured")
    try:
        s = syncstate.summary(conn, syncstate.target_of(target), log_id)
    except sqlite3.OperationalError as e:  # an older database without the sync tables
        return CheckResult("sync", "skipped", "sync", f"no sync state yet ({e})")
    now_ns = now_ns or time.time_ns()
    row = conn.execute("SELECT realtime_ns FROM punches WHERE seq > ? ORDER BY seq LIMIT 1",
                       (s.get("acked_seq") or 0,)).fetchone()
    waiting_min = max(0.0, (now_ns - row[0]) / 60e9) if row else 0.0
    diag = {k: s.get(k) for k in ("backlog", "acked_seq", "head_seq", "last_contact_ns", "last_error")}
    diag["oldest_pending_minutes"] = round(waiting_min, 1)
    if row and waiting_min > lag_minutes:
        return CheckResult("sync", "warning", "sync", f"{s['backlog']} punches waiting for the central server, "
                           f"the oldest for {waiting_min:.0f} min; last error: {s.get('last_error') or 'none'}",
                           diag)
    return CheckResult("sync", "ok", "sync", s.get("summary", ""), diag)


def check_temperature(warn_c: float, critical_c: float, pattern: str = THERMAL_GLOB) -> CheckResult:
    temps = {}
    for zone in sorted(glob.glob(pattern)):
        try:
            raw = Path(zone, "temp").read_text().strip()
            kind = Path(zone, "type").read_text().strip() if Path(zone, "type").exists() else Path(zone).name
            temps[kind] = int(raw) / 1000
        except (OSError, ValueError):
            continue
    if not temps:
        return CheckResult("temperature", "skipped", "temperature", "no thermal sensor")
    hottest = max(temps.values())
    diag = {"celsius": temps, "warn_c": warn_c, "critical_c": critical_c}
    if hottest >= critical_c:
        return CheckResult("temperature", "fault", "temperature", f"CPU at {hottest:.1f} °C: the Pi throttles; "
                           "check ventilation, the case and direct sunlight", diag)
    if hottest >= warn_c:
        return CheckResult("temperature", "warning", "temperature", f"CPU warm: {hottest:.1f} °C", diag)
    return CheckResult("temperature", "ok", "temperature", f"{hottest:.1f} °C", diag)


def read_throttled(sysfs: str = THROTTLED_SYSFS, vcgencmd: str = "vcgencmd") -> int | None:
    """The firmware's throttled bit field, from sysfs or `vcgencmd get_throttled`; None off a Pi."""
    try:
        return int(Path(sysfs).read_text().strip(), 16)
    except (OSError, ValueError):
        pass
    if shutil.which(vcgencmd) is None:
        return None
    try:
        out = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", out)
    return int(m.group(1), 16) if m else None


def check_power(sysfs: str = THROTTLED_SYSFS, vcgencmd: str = "vcgencmd") -> CheckResult:
    bits = read_throttled(sysfs, vcgencmd)
    if bits is None:
        return CheckResult("power", "skipped", "power", "not a Raspberry Pi (no throttling flags)")
    flags = [text for bit, text in THROTTLE_BITS.items() if bits & (1 << bit)]
    diag = {"throttled": hex(bits), "flags": flags}
    if bits & 0b101:  # under-voltage or throttling right now
        return CheckResult("power", "fault", "power", "under-voltage or throttling now: use the official 5.1 V "
                           "power supply and a short, thick USB cable", diag)
    if bits & (1 << 16):
        return CheckResult("power", "warning", "power", "under-voltage has occurred since boot: check the power "
                           "supply and cable", diag)
    return CheckResult("power", "ok", "power", "power ok", diag)


def fs_paths(state_dir) -> list:
    """The file systems a terminal depends on: its state directory first, then the OS root."""
    return [Path(state_dir) if os.path.isdir(state_dir) else Path("/"), Path("/")]


def check_provider(name: str, provider: Callable[[], dict]) -> CheckResult:
    """A driver's own health (camera frames, sensor handshake): {"ok": bool, "error"/"message": str, ...}."""
    category = PROVIDER_CATEGORIES.get(name, "other")
    try:
        report = dict(provider() or {})
    except Exception as e:  # a driver that throws is a broken part, not a broken monitor
        return CheckResult(name, "fault", category, f"{name}: {type(e).__name__}: {e}", {"error": str(e)})
    if report.get("enabled") is False or report.get("skipped"):
        return CheckResult(name, "skipped", category, report.get("message") or f"{name} disabled", report)
    if report.get("ok"):
        return CheckResult(name, "warning" if report.get("warning") else "ok", category,
                           report.get("warning") or report.get("message") or "ok", report)
    listed = "; ".join(str(f.get("message", f)) for f in report.get("faults") or [] if isinstance(f, dict))
    message = report.get("error") or report.get("fault") or listed or report.get("message") or f"{name} failing"
    return CheckResult(name, "fault", category, f"{name}: {message}", report)


# -- the monitor -----------------------------------------------------------------------------------------


class HealthMonitor:
    """Runs every check and keeps fault_events in step: one raised event per problem, cleared on recovery.

    fault_key is "health:<part>:<level>", so a disk warning that becomes critical raises the critical fault
    and clears the warning; a part that is skipped keeps its faults as they were.
    """

    # Seconds between runs of the slower checks (quick_check reads the whole database); others run every tick.
    EVERY = {"database": 600.0, "sync": 30.0, "clock": 10.0, "power": 10.0, "temperature": 10.0,
             "filesystem": 60.0}

    def __init__(self, cfg, conn: sqlite3.Connection | None, *, log_id: str = "",
                 providers: dict[str, Callable[[], dict]] | None = None,
                 checks: dict[str, Callable[[], CheckResult]] | None = None,
                 every: dict[str, float] | None = None, clock: Callable[[], float] = time.monotonic):
        self.cfg, self.conn, self.log_id = cfg, conn, log_id
        self.providers = dict(providers or {})
        self.checks = checks if checks is not None else self.default_checks()
        self.every = dict(self.EVERY if every is None else every)
        self.clock = clock
        self.last: dict[str, CheckResult] = {}
        self._ran: dict[str, float] = {}
        self.db_error: str | None = None  # why the database cannot be opened (a full disk at start)
        self.unrecorded: set[str] = set()  # fault keys raised while they could not be written

    @classmethod
    def open(cls, cfg, *, providers: dict[str, Callable[[], dict]] | None = None) -> HealthMonitor:
        """A monitor with its own connection to the punch database: a sqlite3 connection carries one
        transaction at a time, so the health thread must not share the punch writer's connection. When the
        database cannot be opened (a full disk), the checks run anyway and the monitor connects later."""
        monitor = cls(cfg, None, providers=providers)
        monitor.reconnect()
        return monitor

    def reconnect(self) -> bool:
        if self.conn is not None:
            return True
        from terminal.log import punchlog

        try:
            conn = punchlog.connect(punchlog.db_path(self.cfg.state_dir))
            row = conn.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()
        except Exception as e:  # a LogError or sqlite3 error that says why
            self.db_error = str(e)
            return False
        self.conn, self.log_id, self.db_error = conn, row[0] if row else "", None
        return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _with_db(self, name: str, check: Callable[[], CheckResult]) -> Callable[[], CheckResult]:
        """A check that needs the database: without a connection the database is the fault, the others wait."""
        def run() -> CheckResult:
            if self.conn is None:
                if name == "database":
                    return CheckResult("database", "fault", "database", "the punch database cannot be opened: "
                                       f"{self.db_error}", {"error": self.db_error})
                return CheckResult(name, "skipped", name, "waiting for the punch database")
            return check()
        return run

    def default_checks(self) -> dict[str, Callable[[], CheckResult]]:
        h, state = self.cfg.health, self.cfg.state_dir
        return {
            "disk": lambda: check_disk(state, h.disk_warn_mb, h.disk_critical_mb),
            "database": self._with_db("database", lambda: check_database(self.conn)),
            "clock": self._with_db("clock", lambda: check_clock(self.conn, h.clock_uncertainty_seconds)),
            "sync": self._with_db("sync", lambda: check_sync(self.conn, self.cfg.central.url, self.log_id,
                                                             h.sync_lag_minutes)),
            "temperature": lambda: check_temperature(h.temp_warn_c, h.temp_critical_c),
            "power": check_power,
            "filesystem": lambda: check_filesystem(fs_paths(state), h.kernel_log),
        }

    def run_checks(self) -> dict[str, CheckResult]:
        """Run every check that is due; a check not yet due keeps its last result."""
        results, now = {}, self.clock()
        for name, fn in {**self.checks, **{n: (lambda n=n, p=p: check_provider(n, p))
                                            for n, p in self.providers.items()}}.items():
            if name in self.last and now - self._ran.get(name, -1e18) < self.every.get(name, 0.0):
                results[name] = self.last[name]
                continue
            self._ran[name] = now
            try:
                results[name] = fn()
            except Exception as e:  # one broken check must not hide the others
                results[name] = CheckResult(name, "fault", "other", f"self-test {name} failed: {e}",
                                            {"error": f"{type(e).__name__}: {e}"})
        return results

    def tick(self) -> list[dict]:
        """Run all checks and record what changed; returns the fault events written (usually none)."""
        self.reconnect()
        self.last = self.run_checks()
        if self.conn is None:  # nothing can be written: remember what was raised, write it once possible
            self.unrecorded |= {f"health:{n}:{r.level}" for n, r in self.last.items()
                                if r.level in ("warning", "fault")}
            return []
        try:
            open_keys = {e["fault_key"] for e in faults.open_faults(self.conn)}  # a read: no write lock taken
        except sqlite3.Error as e:
            log.error("cannot read the open faults: %s", e)
            return []
        written = []
        for name, result in self.last.items():
            if result.level == "skipped":
                continue
            for level in ("warning", "fault"):
                key = f"health:{name}:{level}"
                try:
                    written += self._record_missed(key, level, result, key in open_keys)
                    event = self._record(key, level, result, key in open_keys)
                except sqlite3.Error as e:  # e.g. the disk is full: keep checking, status still shows it
                    log.error("cannot record fault %s: %s", key, e)
                    if result.level == level:
                        self.unrecorded.add(key)
                    continue
                if event:
                    written.append(event)
        return written

    def _record_missed(self, key: str, level: str, result: CheckResult, is_open: bool) -> list[dict]:
        """A fault raised while it could not be written, and over by now: written as raised and cleared, so
        that IT staff see the full disk of last night in the fault history."""
        if key not in self.unrecorded:
            return []
        self.unrecorded.discard(key)
        if result.level == level or is_open:
            return []  # still present: _record raises it now
        part = key.split(":")[1]
        raised = faults.raise_fault(self.conn, key, part=part, category=result.category,
                                    message=f"{part} {level} while the punch database could not be written")
        cleared = faults.clear_fault(self.conn, key, message=f"recovered: {result.message}")
        return [e for e in (raised, cleared) if e]

    def _record(self, key: str, level: str, result: CheckResult, is_open: bool) -> dict | None:
        if result.level == level and not is_open:
            diagnostics = {**result.diagnostics, "screen": result.screen} if result.screen else result.diagnostics
            return faults.raise_fault(self.conn, key, part=result.part, category=result.category,
                                      message=result.message, diagnostics=diagnostics)
        if result.level != level and is_open:
            return faults.clear_fault(self.conn, key, message=f"recovered: {result.message}",
                                      diagnostics=result.diagnostics)
        return None

    def summary(self) -> str:
        """One line for sd_notify STATUS= and the log: the parts not ok."""
        bad = [f"{n} {r.level}" for n, r in self.last.items() if r.level in ("warning", "fault")]
        return "all parts ok" if not bad else "; ".join(bad)


def quick_report(cfg) -> dict:
    """The cheap, side-effect-free checks for `presensi status` (disk, file systems, temperature, power)."""
    h = cfg.health
    results = [check_disk(cfg.state_dir if os.path.isdir(cfg.state_dir) else Path("/"), h.disk_warn_mb,
                          h.disk_critical_mb), check_filesystem(fs_paths(cfg.state_dir), h.kernel_log),
               check_temperature(h.temp_warn_c, h.temp_critical_c), check_power()]
    parts = {r.part: r.as_dict() for r in results}
    bad = [f"{r.part}: {r.message}" for r in results if r.level in ("warning", "fault")]
    return {"ok": not bad, "parts": parts,
            "summary": "; ".join(bad) or ", ".join(f"{r.part} {r.message}" for r in results if r.level == "ok")}
