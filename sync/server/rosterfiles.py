"""Reading a roster from the files a regency's staff keep: a CSV or JSON list of employees plus a folder of
enrolment photos. Used by the reference server's `presensi server publish-roster`.

CSV columns (header row required): id, name, and optionally uid, pin_allowed (1/0, true/false, ya/tidak),
finger_templates (base64 512-byte templates separated by spaces or ';'), office (where enrolled templates go
with the office scope, sync/server/offices.py).
JSON: a list of employee objects (or {"employees": [...]}) with the same keys, plus optional
face_templates (lists of 128 numbers) and face_photos (file names relative to photos_dir).
Photos: photos_dir/<id>/*.jpg|*.jpeg|*.png and photos_dir/<id>.jpg|.jpeg|.png, in name order.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from pathlib import Path

from sync.wire.rosterbundle import EMPLOYEE_ID, stable_uid

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
TRUE_WORDS = {"1", "true", "yes", "ya", "y"}
FALSE_WORDS = {"", "0", "false", "no", "tidak", "n"}


class RosterFileError(ValueError):
    """The employee file is unusable; the message names the file, the row and what to fix."""


def publish_from_files(csv_or_json_path, photos_dir=None, *, previous: list[dict] | None = None) -> list[dict]:
    """Employees ready for rosterbundle.build_bundle (photos and fingerprint templates as bytes).

    `previous`: the employees of the last published roster, so that an employee keeps their uid
    (the ZKTeco user number) from one roster to the next."""
    path = Path(csv_or_json_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise RosterFileError(f"{path}: cannot read the employee file ({e})") from None
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    employees = [_employee(path, where, row, photos_dir) for where, row in rows]
    _assign_uids(path, employees, previous or [])
    return employees


def _json_rows(path: Path, text: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise RosterFileError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("employees")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise RosterFileError(f"{path}: expected a list of employee objects (or {{\"employees\": [...]}})")
    return [(f"employee #{i + 1}", r) for i, r in enumerate(data)]


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "id" not in reader.fieldnames:
        raise RosterFileError(f"{path}: the first row must be a header with at least 'id' and 'name'")
    return [(f"line {i + 2}", {k.strip(): (v or "").strip() for k, v in r.items() if k})
            for i, r in enumerate(reader)]


def _employee(path: Path, where: str, row: dict, photos_dir) -> dict:
    emp_id = str(row.get("id", "")).strip()
    if not EMPLOYEE_ID.match(emp_id):
        raise RosterFileError(f"{path} {where}: id {emp_id!r} is not valid (1-64 of A-Z a-z 0-9 . _ -)")
    emp = {"id": emp_id, "name": str(row.get("name") or "").strip(), "uid": _uid(path, where, row.get("uid")),
           "pin_allowed": _bool(path, where, row.get("pin_allowed", False)),
           "office": str(row.get("office") or "").strip(),
           "face_templates": row.get("face_templates") or [],
           "finger_templates": _fingers(path, where, row.get("finger_templates")),
           "face_photos": []}
    for name in row.get("face_photos") or []:
        emp["face_photos"].append(_read(path, where, Path(photos_dir or path.parent) / name))
    if photos_dir:
        for photo in _photo_files(Path(photos_dir), emp_id):
            emp["face_photos"].append(_read(path, where, photo))
    return emp


def _photo_files(photos_dir: Path, emp_id: str) -> list[Path]:
    found = [photos_dir / f"{emp_id}{s}" for s in PHOTO_SUFFIXES if (photos_dir / f"{emp_id}{s}").is_file()]
    folder = photos_dir / emp_id
    if folder.is_dir():
        found += sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    return found


def _read(path: Path, where: str, photo: Path) -> bytes:
    try:
        return photo.read_bytes()
    except OSError as e:
        raise RosterFileError(f"{path} {where}: cannot read photo {photo} ({e.strerror or e})") from None


def _uid(path: Path, where: str, value) -> int | None:
    if value in (None, ""):
        return None
    try:
        uid = int(value)
    except (TypeError, ValueError):
        raise RosterFileError(f"{path} {where}: uid {value!r} is not a whole number") from None
    if not 1 <= uid <= 65535:
        raise RosterFileError(f"{path} {where}: uid {uid} must be from 1 to 65535")
    return uid


def _bool(path: Path, where: str, value) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise RosterFileError(f"{path} {where}: pin_allowed {value!r} must be 1/0, true/false or ya/tidak")


def _fingers(path: Path, where: str, value) -> list[bytes]:
    if not value:
        return []
    items = value if isinstance(value, list) else str(value).replace(";", " ").split()
    try:
        return [base64.b64decode(t, validate=True) for t in items]
    except (binascii.Error, ValueError, TypeError):
        raise RosterFileError(f"{path} {where}: finger_templates must be base64 text") from None


def _assign_uids(path: Path, employees: list[dict], previous: list[dict]) -> None:
    given = [e["uid"] for e in employees if e["uid"] is not None]
    if len(given) != len(set(given)):
        raise RosterFileError(f"{path}: the same uid is given to two employees")
    taken = set(given)
    known = {p["id"]: p.get("uid") for p in previous}
    for e in employees:
        if e["uid"] is None and known.get(e["id"]) and known[e["id"]] not in taken:
            e["uid"] = known[e["id"]]
            taken.add(e["uid"])
    # Sorted so that the numbers handed out do not depend on row order.
    for e in sorted((e for e in employees if e["uid"] is None), key=lambda e: e["id"]):
        e["uid"] = stable_uid(e["id"], taken)
        taken.add(e["uid"])
