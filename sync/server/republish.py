"""Publishing the next roster version: the employees (the staff's new files, or those of the last published
roster), the templates terminals enrolled and the server accepted (sync/server/enrolments.py), and the messages
and apel cancellations in force (sync/server/notices.py), signed as one bundle for every terminal.

Every change that terminals must see (a new enrolment, a decision, a message, a cancellation, a new employee
list) publishes through here, so no change waits for a manual step and none is lost by the next publish.
Two publishers at once (the API and a CLI command) race for the same version number; the loser retries with
the next one.
"""

from __future__ import annotations

import threading

from sync.wire import rosterbundle

from . import enrolments, notices, offices

_LOCK = threading.Lock()  # publishers in one process queue here; across processes the version key decides
ATTEMPTS = 5


def latest(store) -> dict | None:
    """The last published roster decoded (its signature checked with this server's key), None if none."""
    row = store.latest_roster()
    if row is None:
        return None
    return rosterbundle.verify_bundle(row["bundle"], store.server_key().public_key(), 0)


def roster_ids(store) -> set[str]:
    current = latest(store)
    return {e["id"] for e in current["employees"]} if current else set()


def publish_next(store, *, employees: list[dict] | None = None, schedule: dict | None = None,
                 holidays: list | None = None, version: int | None = None) -> dict:
    """Sign and store the next version; returns {"version", "employees", "bytes", "bundle", ...}. Raises
    BundleRejected when the terminals would refuse it (nothing is published then)."""
    with _LOCK:
        for attempt in range(ATTEMPTS):
            current = latest(store)
            base = employees if employees is not None else (current["employees"] if current else [])
            merged = enrolments.merge(store, base)
            messages, apel = notices.for_bundle(store, {e["id"] for e in merged})
            number = version or ((current["version"] if current else 0) + 1)
            content = {"schedule": schedule if schedule is not None else (current["schedule"] if current else {}),
                       "holidays": holidays if holidays is not None else (current["holidays"] if current else []),
                       "messages": messages, "apel_cancelled": apel}
            bundle = _build(store, number, merged, content)
            try:
                store.publish_roster(number, bundle)
            except Exception:  # the version was taken meanwhile by another process (the key is unique)
                if version is not None or attempt == ATTEMPTS - 1 or (store.latest_roster() or {}).get(
                        "version", 0) < number:
                    raise
                continue
            if offices.scope(store) == "office":
                for office in offices.offices(store):
                    _publish_variant(store, number, merged, content, office)
            return {"version": number, "employees": len(merged), "bytes": len(bundle), "bundle": bundle,
                    "messages": len(messages), "apel_cancelled": len(apel),
                    "face_templates": sum(len(e.get("face_templates") or []) for e in merged),
                    "face_photos": sum(len(e.get("face_photos") or []) for e in merged),
                    "finger_templates": sum(len(e.get("finger_templates") or []) for e in merged)}
    raise AssertionError("unreachable")


def _build(store, number: int, employees: list[dict], content: dict) -> bytes:
    return rosterbundle.build_bundle(store.server_key(), number, employees, content["schedule"], content["holidays"],
                                     messages=content["messages"], apel_cancelled=content["apel_cancelled"],
                                     enrolment_key=enrolments.public_key_b64(store))


def _publish_variant(store, number: int, employees: list[dict], content: dict, office: str) -> bytes:
    scoped = offices.for_office(employees, enrolments.accepted_hashes(store), offices.employee_offices(store),
                                office, enrolments.template_sha256)
    bundle = _build(store, number, scoped, content)
    offices.store_variant(store, number, office, bundle)
    return bundle


def bundle_for(store, device: str, latest_row: dict) -> bytes:
    """The bundle of the latest version as `device` gets it: the regency's, or with the office scope its
    office's (signed now if that office had none yet, e.g. a terminal given an office since)."""
    if offices.scope(store) != "office":
        return latest_row["bundle"]
    office = offices.device_office(store, device)
    bundle = offices.variant(store, latest_row["version"], office)
    if bundle is None:
        with _LOCK:
            current = rosterbundle.verify_bundle(latest_row["bundle"], store.server_key().public_key(), 0)
            content = {k: current[k] for k in ("schedule", "holidays", "messages", "apel_cancelled")}
            bundle = _publish_variant(store, current["version"], current["employees"], content, office)
    return bundle
