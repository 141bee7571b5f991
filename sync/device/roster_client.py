"""Fetching the roster from the central server (or a file) and swapping it in once it is proven good.

    GET {central.url}/api/v1/devices/{device_id}/roster?since=VERSION   (Authorization: Bearer token)
    200 → a bundle (sync.wire.rosterbundle) · 204/304 → nothing newer than VERSION

Every bundle is verified completely with the PINNED server key before `terminal.punch.roster.install` swaps it
in; a rejected bundle leaves the installed roster untouched. Both outcomes go to the punch log's audit
trail (no biometric data, just version, sha256, counts or the reason).
"""

from __future__ import annotations

import logging
from pathlib import Path

import requests

from sync.wire.rosterbundle import BundleLimits, BundleRejected, verify_bundle
from terminal.errors import LogError
from terminal.log import punchlog
from terminal.punch import roster, rules

log = logging.getLogger("presensi.roster")
CHUNK = 64 * 1024


class RosterPullError(Exception):
    """The roster could not be fetched (network, server, configuration); the message says what to do."""


def limits_from_config(cfg) -> BundleLimits:
    r = cfg.roster
    return BundleLimits(max_bundle_bytes=r.max_bundle_bytes, max_manifest_bytes=4 * r.max_bundle_bytes,
                        max_employees=r.max_employees, max_face_templates=r.max_templates,
                        max_face_photos=r.max_templates, max_finger_templates=r.max_templates,
                        max_photo_bytes=r.max_photo_bytes)


def pull_roster(cfg, *, session: requests.Session | None = None) -> dict:
    """Ask the central server for a roster newer than the installed one and install it if it is good.
    Returns {"status": "current"|"installed", "version", ...}; raises RosterPullError or BundleRejected."""
    if not cfg.central.url or not cfg.central.token:
        raise RosterPullError("[central] url and token are not set; register the device with "
                              "`presensi server add-device` and put its token in the configuration")
    current = roster.current_version(cfg.state_dir)
    url = f"{cfg.central.url.rstrip('/')}/api/v1/devices/{cfg.device.id}/roster"
    data = _download(session or requests.Session(), url, cfg, current)
    if data is None:
        return {"status": "current", "version": current}
    return install_bundle(cfg, data, source=url)


def import_file(cfg, path: str | Path) -> dict:
    """`presensi roster import FILE`: install a bundle carried on a USB stick (still verified and signed)."""
    try:
        size = Path(path).stat().st_size
        limit = limits_from_config(cfg).max_bundle_bytes
        if size > limit:
            _reject(cfg, str(path), BundleRejected("oversized", f"bundle is {size} bytes, over the limit of "
                                                                f"{limit} bytes"))
        data = Path(path).read_bytes()
    except OSError as e:
        raise RosterPullError(f"{path}: cannot read the bundle ({e.strerror or e})") from None
    return install_bundle(cfg, data, source=f"file:{path}")


def install_bundle(cfg, data: bytes, *, source: str) -> dict:
    current = roster.current_version(cfg.state_dir)
    try:
        bundle = verify_bundle(data, cfg.central.server_key, current, limits_from_config(cfg),
                               device_id=cfg.device.id, schedule_check=rules.check_published)
    except BundleRejected as e:
        _reject(cfg, source, e)
    try:
        info = roster.install(cfg.state_dir, version=bundle["version"], employees=bundle["employees"],
                              schedule=bundle["schedule"], holidays=bundle["holidays"], source=source,
                              bundle_sha256=bundle["sha256"], created_utc=bundle["created_utc"])
    except roster.StaleRoster as e:
        _reject(cfg, source, BundleRejected("old-version", f"{e} (installed meanwhile)"))
    details = {"version": bundle["version"], "previous_version": current, "sha256": bundle["sha256"],
               "source": source, **bundle["counts"]}
    audit = _audit(cfg, "roster.installed", details)
    log.info("roster version %s installed (%s employees)", bundle["version"], bundle["counts"]["employees"])
    return {"status": "installed", **details, "audit": audit, "roster": info}


def _reject(cfg, source: str, e: BundleRejected):
    _audit(cfg, "roster.rejected", {"code": e.code, "reason": e.reason, "source": source})
    log.warning("roster bundle from %s rejected: %s", source, e)
    raise e


def _audit(cfg, action: str, details: dict) -> str:
    try:
        with punchlog.PunchLog(cfg.state_dir) as plog:
            plog.audit("roster", action, details)
        return "recorded"
    except LogError as e:  # the roster still works without the punch log; say so instead of failing
        log.warning("could not write the audit entry: %s", e)
        return f"not recorded: {e}"


def _download(session: requests.Session, url: str, cfg, current: int) -> bytes | None:
    limit = limits_from_config(cfg).max_bundle_bytes
    headers = {"Authorization": f"Bearer {cfg.central.token}", "Accept": "application/vnd.presensi.roster+gzip"}
    timeout = (cfg.central.timeout, cfg.central.timeout)
    try:
        with session.get(url, params={"since": current}, headers=headers, timeout=timeout, stream=True) as r:
            if r.status_code in (204, 304):
                return None
            _check_status(r, url)
            declared = r.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                _reject(cfg, url, BundleRejected("oversized", f"server offers {declared} bytes, over the limit "
                                                              f"of {limit} bytes"))
            body = bytearray()
            for chunk in r.iter_content(CHUNK):
                body += chunk
                if len(body) > limit:
                    _reject(cfg, url, BundleRejected("oversized", f"bundle is over the limit of {limit} bytes"))
            return bytes(body)
    except requests.exceptions.Timeout:
        raise RosterPullError(f"{url}: the central server did not answer within {cfg.central.timeout} s; "
                              "the current roster stays in use, retry later") from None
    except requests.exceptions.RequestException as e:
        raise RosterPullError(f"{url}: cannot reach the central server ({type(e).__name__}); check the "
                              "network and [central] url; the current roster stays in use") from None


def _check_status(r: requests.Response, url: str) -> None:
    if r.status_code == 200:
        return
    if r.status_code in (401, 403):
        raise RosterPullError(f"{url}: the server refused the device token (HTTP {r.status_code}); check "
                              "[central] token against `presensi server add-device`")
    if r.status_code == 404:
        raise RosterPullError(f"{url}: not found (HTTP 404); is the device registered on the server and "
                              "[device] id spelled as registered?")
    if r.status_code in (429, 503):
        raise RosterPullError(f"{url}: the server is busy (HTTP {r.status_code}); retry later")
    raise RosterPullError(f"{url}: unexpected HTTP {r.status_code} from the central server; retry later "
                          "and report it to the server administrator if it persists")


def run_periodically(cfg, stop_event, *, session: requests.Session | None = None) -> None:
    """For the daemon: pull every [roster] pull_interval seconds until stop_event is set. Failures are
    logged (and audited when a bundle is refused) and retried later with a doubled wait, up to
    [central] max_backoff; the installed roster keeps working throughout."""
    session = session or requests.Session()
    wait = cfg.roster.pull_interval
    while not stop_event.is_set():
        try:
            pull_roster(cfg, session=session)
            wait = cfg.roster.pull_interval
        except (RosterPullError, BundleRejected, roster.RosterError) as e:
            log.warning("roster pull failed: %s", e)
            wait = min(max(wait, 1.0) * 2, cfg.central.max_backoff)
        stop_event.wait(wait)
