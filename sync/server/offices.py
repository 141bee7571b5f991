"""Where enrolled templates go: to every terminal of the regency (the default), or, with the office scope
(`presensi server enrolments settings --scope office`), only to the terminals of the employee's office.

Offices are names: an employee's comes from the staff's files (the optional `office` column of
`presensi server publish-roster`), a terminal's from `presensi server enrolments office DEVICE OFFICE`.
With the office scope each roster version is also signed once per office (`office_rosters`): the same
employees, schedule and messages, but a template enrolled at a terminal is left out for employees of other
offices. An employee without an office, and the templates from the staff's own files, go everywhere. A
terminal without an office gets the enrolled templates of employees without an office only.
"""

from __future__ import annotations

import re

SCOPE_KEY = "enrolment_scope"
SCOPES = ("regency", "office")
OFFICE = re.compile(r"^[A-Za-z0-9._ -]{1,64}$")


class OfficeError(ValueError):
    """An office or scope is not usable; the message says what to write."""


def check_office(office: str) -> str:
    office = (office or "").strip()
    if not OFFICE.match(office):
        raise OfficeError(f"office {office!r}: 1-64 letters, digits, spaces, '.', '_' or '-'")
    return office


def scope(store) -> str:
    rows = store.query("SELECT value FROM server_meta WHERE key=?", (SCOPE_KEY,))
    return rows[0]["value"] if rows else "regency"


def set_scope(store, value: str) -> None:
    if value not in SCOPES:
        raise OfficeError(f"scope {value!r}: use regency or office")
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM server_meta WHERE key=?", (SCOPE_KEY,))
        store.execute(cur, "INSERT INTO server_meta VALUES (?, ?)", (SCOPE_KEY, value))


def set_device_office(store, device: str, office: str | None) -> None:
    if store.device(device) is None:
        raise OfficeError(f"device {device} is not registered; see `presensi server add-device`")
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM device_offices WHERE device_id=?", (device,))
        if office:
            store.execute(cur, "INSERT INTO device_offices VALUES (?, ?)", (device, check_office(office)))


def device_office(store, device: str) -> str:
    rows = store.query("SELECT office FROM device_offices WHERE device_id=?", (device,))
    return rows[0]["office"] if rows else ""


def offices(store) -> list[str]:
    """Every office a terminal belongs to, and "" for terminals without one."""
    return ["", *sorted({r["office"] for r in store.query("SELECT office FROM device_offices")})]


def set_employee_offices(store, mapping: dict[str, str]) -> None:
    """The employees' offices from the staff's files (replaces the previous list)."""
    rows = [(emp, check_office(office)) for emp, office in mapping.items() if office]
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM employee_offices")
        store.executemany(cur, "INSERT INTO employee_offices VALUES (?, ?)", rows)


def employee_offices(store) -> dict[str, str]:
    return {r["employee"]: r["office"] for r in store.query("SELECT employee, office FROM employee_offices")}


def for_office(employees: list[dict], enrolled: set[tuple[str, str, str]], homes: dict[str, str], office: str,
               template_sha256) -> list[dict]:
    """The employees as a terminal of `office` gets them: templates enrolled at terminals (`enrolled`:
    (employee, modality, sha256)) only for employees of this office or of none."""
    out = []
    for e in employees:
        if homes.get(e["id"], "") in ("", office):
            out.append(e)
            continue
        e = dict(e)
        for modality, key in (("face", "face_templates"), ("finger", "finger_templates")):
            e[key] = [t for t in e.get(key) or [] if (e["id"], modality, template_sha256(modality, t)) not in enrolled]
        out.append(e)
    return out


def store_variant(store, version: int, office: str, bundle: bytes) -> None:
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM office_rosters WHERE version=? AND office=?", (version, office))
        store.execute(cur, "INSERT INTO office_rosters VALUES (?, ?, ?)",
                      (version, office, store.keys.encrypt(bundle, f"office_rosters:{version}:{office}")))


def variant(store, version: int, office: str) -> bytes | None:
    rows = store.query("SELECT bundle FROM office_rosters WHERE version=? AND office=?", (version, office))
    return store.keys.decrypt(rows[0]["bundle"], f"office_rosters:{version}:{office}") if rows else None
