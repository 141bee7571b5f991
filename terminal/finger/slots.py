"""Keeps the fingerprint sensor's template slots in step with the roster.

The sensor searches 1:N on its own, so each roster template must sit in a sensor slot, and the terminal must
know which employee a slot belongs to. That slot → employee map lives in `state_dir/fingerslots.db` (its own
SQLite file: it describes one sensor, not the punch history). Only template hashes are kept there; templates
enrolled on this terminal and not yet in the roster are kept sealed (terminal/secretbox.py) until the
roster carries them.

`sync_slots` touches only what changed: leavers' slots are deleted, new templates go to free slots; a sensor
whose slots disagree with the map (wiped, swapped, or a template that reads back differently) is repaired or
cleared and refilled; templates beyond the capacity give a fault that names who is affected.

The roster is a plain list of (employee_id, [512-byte templates]), e.g. from
`[(e["id"], e["finger_templates"]) for e in Roster.open(state_dir).employees()]`.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from drivers.fingerprint.base import FingerprintSensor, SensorError
from drivers.fingerprint.registry import model_class
from terminal.log import punchlog
from terminal.secretbox import SecretBox

DB_FILE = "fingerslots.db"
TEMPLATE_BYTES = 512
SAMPLE_CHECKS = 3  # mapped slots read back per sync to notice a swapped sensor with the same occupancy

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS slots (
        slot INTEGER PRIMARY KEY,
        employee TEXT NOT NULL,
        template_sha256 TEXT NOT NULL,
        stored_ns INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS slots_employee ON slots(employee)",
    """CREATE TABLE IF NOT EXISTS enrolments (
        id INTEGER PRIMARY KEY,
        employee TEXT NOT NULL,
        slot INTEGER NOT NULL,
        template_sha256 TEXT NOT NULL,
        sealed_template BLOB NOT NULL,
        created_ns INTEGER NOT NULL
    )""",
]


def template_hash(template: bytes) -> str:
    return hashlib.sha256(bytes(template)).hexdigest()


class SlotMap:
    """The slot → employee map of this terminal's sensor."""

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.readonly = False
        try:
            self.conn = self._open(self.state_dir / DB_FILE)
        except sqlite3.OperationalError:
            if not (self.state_dir / DB_FILE).exists():
                raise
            # a full disk: the map is still read, so a finger finds its employee and the punch gets the clear
            # refusal; syncing (a write) fails until space returns and the next start or roster change
            self.conn = punchlog.connect_readonly(self.state_dir / DB_FILE)
            self.readonly = True

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL, not FULL: a map row lost in a power cut only costs a re-upload (the next sync reconciles).
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rows(self) -> dict[int, tuple[str, str]]:
        return {slot: (emp, sha) for slot, emp, sha in
                self.conn.execute("SELECT slot, employee, template_sha256 FROM slots")}

    def employee_for(self, slot: int) -> str | None:
        row = self.conn.execute("SELECT employee FROM slots WHERE slot = ?", (slot,)).fetchone()
        return row[0] if row else None

    def assign(self, slot: int, employee: str, sha: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO slots VALUES (?, ?, ?, ?)", (slot, employee, sha, time.time_ns()))

    def remove(self, slots: Iterable[int]) -> None:
        self.conn.executemany("DELETE FROM slots WHERE slot = ?", [(s,) for s in slots])

    def clear(self) -> None:
        self.conn.execute("DELETE FROM slots")

    def add_enrolment(self, employee: str, slot: int, template: bytes) -> None:
        sha = template_hash(template)
        sealed = SecretBox(self.state_dir).seal(template, f"finger-enrolment:{employee}:{sha}".encode())
        self.conn.execute("INSERT INTO enrolments (employee, slot, template_sha256, sealed_template, created_ns) "
                          "VALUES (?, ?, ?, ?, ?)", (employee, slot, sha, sealed, time.time_ns()))

    def enrolments(self) -> list[dict]:
        """Templates enrolled here (unsealed), for delivery to the central server and for sync."""
        box = SecretBox(self.state_dir)
        out = []
        for id_, emp, slot, sha, sealed, ns in self.conn.execute(
                "SELECT id, employee, slot, template_sha256, sealed_template, created_ns FROM enrolments ORDER BY id"):
            template = box.open(sealed, f"finger-enrolment:{emp}:{sha}".encode())
            out.append({"id": id_, "employee": emp, "slot": slot, "template": template, "created_ns": ns})
        return out

    def forget_enrolments(self, ids: Iterable[int]) -> None:
        """Once the roster carries them (delivered to and published by the central server)."""
        self.conn.executemany("DELETE FROM enrolments WHERE id = ?", [(i,) for i in ids])


@dataclass
class SyncReport:
    capacity: int = 0
    wanted: int = 0
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    repaired: str | None = None  # why the sensor disagreed with the map, if it did
    unplaced: dict[str, int] = field(default_factory=dict)  # employee → templates that did not fit
    invalid: dict[str, int] = field(default_factory=dict)  # employee → templates that are not 512 bytes
    seconds: float = 0.0

    @property
    def fault(self) -> str | None:
        if not self.unplaced:
            return None
        missing = sum(self.unplaced.values())
        names = ", ".join(f"{emp} ({n})" for emp, n in sorted(self.unplaced.items()))
        return (f"{missing} fingerprint template(s) did not fit in the sensor (capacity {self.capacity}, "
                f"{self.wanted} wanted); these employees cannot punch by fingerprint: {names}. Fit a sensor "
                "with more slots or enrol fewer fingers per employee")

    def as_dict(self) -> dict:
        return {"capacity": self.capacity, "wanted": self.wanted, "added": len(self.added),
                "removed": len(self.removed), "repaired": self.repaired, "unplaced": self.unplaced,
                "invalid": self.invalid, "fault": self.fault, "seconds": round(self.seconds, 3)}


def _wanted(roster: Iterable[tuple[str, list[bytes]]], slot_map: SlotMap,
            report: SyncReport) -> dict[tuple[str, str], bytes]:
    """(employee, template hash) → template, in roster order, local enrolments after the roster's."""
    wanted: dict[tuple[str, str], bytes] = {}
    extra = [(e["employee"], [e["template"]]) for e in slot_map.enrolments()]
    for employee, templates in [*roster, *extra]:
        for t in templates or []:
            if len(t) != TEMPLATE_BYTES:
                report.invalid[employee] = report.invalid.get(employee, 0) + 1
                continue
            wanted.setdefault((employee, template_hash(t)), bytes(t))
    return wanted


def _reconcile(sensor: FingerprintSensor, slot_map: SlotMap, capacity: int) -> str | None:
    """Make the map describe what the sensor really holds; returns what was wrong (None if nothing)."""
    mapped = slot_map.rows()
    occupied = sensor.template_slots()
    sample = sorted(mapped)[:: max(1, len(mapped) // SAMPLE_CHECKS)][:SAMPLE_CHECKS]
    for slot in sample:
        if slot in occupied and template_hash(sensor.read_template(slot)) != mapped[slot][1]:
            sensor.clear()
            slot_map.clear()
            return f"slot {slot} holds a different template: sensor swapped; cleared and refilled"
    problems = []
    missing = [s for s in mapped if s not in occupied or s >= capacity]
    if missing:
        slot_map.remove(missing)
        what = "wiped" if not occupied else "missing templates"
        problems.append(f"{len(missing)} mapped slot(s) empty on the sensor ({what}); refilled")
    foreign = sorted(s for s in occupied if s not in mapped)
    for slot in foreign:
        sensor.delete_templates(slot)
    if foreign:
        problems.append(f"{len(foreign)} unknown template(s) on the sensor deleted")
    return "; ".join(problems) or None


def sync_slots(sensor: FingerprintSensor, slot_map: SlotMap, roster: Iterable[tuple[str, list[bytes]]], *,
               progress: Callable[[int, int], None] | None = None) -> SyncReport:
    """Bring the sensor's slots in line with the roster. Each store is recorded as it completes, so an
    interrupted sync resumes where it stopped. Raises SensorError if the sensor fails mid-way."""
    started = time.monotonic()
    report = SyncReport()
    wanted = _wanted(roster, slot_map, report)
    report.wanted = len(wanted)
    report.capacity = capacity = sensor.open()["capacity"]
    report.repaired = _reconcile(sensor, slot_map, capacity)
    mapped = slot_map.rows()
    for slot, key in sorted(mapped.items()):
        if key not in wanted:
            sensor.delete_templates(slot)
            slot_map.remove([slot])
            report.removed.append(slot)
    have = set(slot_map.rows().values())
    todo = [(key, t) for key, t in wanted.items() if key not in have]
    used = set(slot_map.rows())
    free = (s for s in range(capacity) if s not in used)
    for i, ((employee, sha), template) in enumerate(todo):
        slot = next(free, None)
        if slot is None:
            for emp, _ in (k for k, _ in todo[i:]):
                report.unplaced[emp] = report.unplaced.get(emp, 0) + 1
            break
        sensor.write_template(slot, template)
        slot_map.assign(slot, employee, sha)
        report.added.append(slot)
        if progress:
            progress(i + 1, len(todo))
    report.seconds = time.monotonic() - started
    return report


CAPACITY_FAULT = "fingerprint:capacity"


def report_sync_fault(conn: sqlite3.Connection, report: SyncReport) -> None:
    """Raise (or clear) the capacity fault in the punch database's fault_events (terminal/ops/faults.py), so it
    shows in `presensi status` and reaches the central server. A changed count replaces the open fault."""
    from terminal.ops import faults

    open_now = [f for f in faults.open_faults(conn) if f["fault_key"] == CAPACITY_FAULT]
    if report.fault is None or (open_now and open_now[-1]["message"] != report.fault):
        faults.clear_fault(conn, CAPACITY_FAULT, message="fingerprint templates fit in the sensor"
                           if report.fault is None else "replaced by a newer count")
    if report.fault is not None:
        faults.raise_fault(conn, CAPACITY_FAULT, part="fingerprint", category="fingerprint", message=report.fault,
                           diagnostics={"capacity": report.capacity, "wanted": report.wanted,
                                        "unplaced": report.unplaced})


def free_slot(sensor: FingerprintSensor, slot_map: SlotMap) -> int:
    capacity = sensor.open()["capacity"]
    taken = set(slot_map.rows()) | sensor.template_slots()
    slot = next((s for s in range(capacity) if s not in taken), None)
    if slot is None:
        raise SensorError(f"the sensor is full ({capacity} templates); remove leavers first", "sensor")
    return slot


def enrol_employee(sensor: FingerprintSensor, slot_map: SlotMap, employee: str, *,
                    prompt: Callable[[str], None] = lambda step: None, timeout: float = 20.0) -> dict:
    """Enrol a finger for `employee` in a free slot; the template is kept (sealed) for the central server."""
    slot = free_slot(sensor, slot_map)
    template = sensor.enrol(slot, prompt=prompt, timeout=timeout)
    slot_map.assign(slot, employee, template_hash(template))
    slot_map.add_enrolment(employee, slot, template)
    return {"employee": employee, "slot": slot, "template": base64.b64encode(template).decode("ascii")}


def status_part(cfg) -> dict:
    """The fingerprint line in `presensi status` (terminal.ops.status.PARTS). It does not open the port: the
    daemon owns it, and a second reader on a UART garbles both; the daemon reports the sensor's health."""
    fp = cfg.fingerprint
    if not fp.enabled:
        return {"ok": True, "enabled": False, "summary": "disabled ([fingerprint] enabled = false)"}
    try:
        uses_port = model_class(fp.model).uses_port
    except SensorError as e:
        return {"ok": False, "enabled": True, "model": fp.model, "error": str(e)}
    info = {"enabled": True, "model": fp.model, "port": fp.port,
            "port_present": Path(fp.port).exists() if uses_port else None}
    map_file = Path(cfg.state_dir) / DB_FILE
    if map_file.exists():
        with SlotMap(cfg.state_dir) as slots:
            info["slots"] = len(slots.rows())
            info["pending_enrolments"] = slots.conn.execute("SELECT count(*) FROM enrolments").fetchone()[0]
    else:
        info.update(slots=0, pending_enrolments=0)
    if not uses_port:
        return {"ok": True, "summary": f"{info['slots']} templates in sensor slots, {fp.model} sensor (no port)",
                **info}
    if not info["port_present"]:
        return {"ok": False, "error": f"fingerprint port {fp.port} does not exist: sensor adapter unplugged or "
                "[fingerprint] port wrong", **info}
    return {"ok": True, "summary": f"{info['slots']} templates in sensor slots, port {fp.port}", **info}
